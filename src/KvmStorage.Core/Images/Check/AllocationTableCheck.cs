using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Check;

/// <summary>
/// The structural check that block-mapped formats allow (VDI, VHD, VMDK, VHDX): every allocation table entry points
/// inside the file and no block (grain) is used twice. The format's reader validates the header first, as qemu does
/// when it opens the image; the format's own walk then reports each table entry through <see cref="Claim"/>.
/// </summary>
internal sealed class AllocationTableCheck
{
    private const int MaxFindings = 10_000;

    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly CancellationToken cancellationToken;
    private readonly List<ImageCorruption> findings = [];
    private ulong corruptions;
    private ulong endOffset;

    private AllocationTableCheck(SafeFileHandle handle, string path, CancellationToken cancellationToken)
    {
        this.handle = handle;
        this.path = path;
        this.cancellationToken = cancellationToken;
        FileLength = (ulong)RandomAccess.GetLength(handle);
    }

    public ulong FileLength { get; }

    /// <summary>The blocks (grains) the image maps, allocated or not.</summary>
    public ulong Total { get; set; }

    /// <summary>The table entries that name a block, valid or not.</summary>
    public ulong Allocated { get; set; }

    /// <summary>
    /// Checks an image of <paramref name="reader"/>'s format: its header by the reader's rules, then its tables by
    /// <paramref name="walk"/>. Only checking is supported: a repair is refused.
    /// </summary>
    public static ImageCheckResult Run(SafeFileHandle handle, ImageProbe probe, IImageFormatReader reader, ImageRepairMode repair, Action<AllocationTableCheck> walk, CancellationToken cancellationToken)
    {
        reader.ReadInfo(handle, probe, 0);
        if (repair != ImageRepairMode.None)
        {
            throw ImageErrors.NotSupported(ImageCheckErrorIds.RepairNotSupported, probe.Path, $"repairing {reader.Format.ToQemuName()} images is not supported; only checking is.");
        }

        var check = new AllocationTableCheck(handle, probe.Path, cancellationToken);
        walk(check);
        return new ImageCheckResult
        {
            Path = probe.Path,
            ImageFormat = reader.Format,
            CorruptionCount = check.corruptions,
            Corruptions = check.findings,
            TotalClusters = check.Total,
            AllocatedClusters = check.Allocated,
            ImageEndOffset = check.endOffset,
        };
    }

    public void Corruption(ulong offset, ImageCorruptionKind kind, string message)
    {
        corruptions++;
        if (findings.Count < MaxFindings)
        {
            findings.Add(new ImageCorruption(offset, kind, message));
        }
    }

    /// <summary>Reads a table that must lie inside the file.</summary>
    public byte[] Read(ulong offset, ulong count)
    {
        if (offset > FileLength || count > FileLength - offset || count > int.MaxValue)
        {
            throw ImageErrors.Invalid(ImageErrorIds.TableOutOfBounds, path, $"a table at 0x{offset:x} ({count} bytes) lies past the end of the file.");
        }

        return ImageIo.ReadBytes(handle, offset, (int)count, path);
    }

    /// <summary>Records a block at [offset, offset + size): inside the file and not shared with another entry.</summary>
    public void Claim(Dictionary<ulong, ulong> owners, ulong entryAt, ulong offset, ulong size, ulong index, string what)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Allocated++;
        if (offset > FileLength || size > FileLength - offset)
        {
            Corruption(entryAt, ImageCorruptionKind.PastEndOfFile, $"{what} {index} at 0x{offset:x} lies past the end of the file (0x{FileLength:x}).");
            return;
        }

        endOffset = Math.Max(endOffset, offset + size);
        if (!owners.TryAdd(offset, index))
        {
            Corruption(entryAt, ImageCorruptionKind.ClusterUsedTwice, $"{what} {index} at 0x{offset:x} is also used by {what} {owners[offset]}.");
        }
    }
}
