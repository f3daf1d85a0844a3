namespace KvmStorage.Core.Images;

/// <summary>Image formats recognised by content. Names match qemu-img's format names via <see cref="ImageFormats.ToQemuName"/>.</summary>
public enum ImageFormat
{
    Raw,
    Qcow2,
    Qcow,
    Vmdk,
    Vdi,
    Vpc,
    Vhdx,
    Luks,
    Qed,
    Parallels,
}

/// <summary>
/// How an image keeps its guest data, in the words of Hyper-V's Get-VHD (VhdType): all of it in place, blocks
/// allocated as they are written, or only what differs from a backing (parent) image.
/// </summary>
public enum DiskType
{
    /// <summary>Every guest byte has its place in the file from the start (raw, fixed VHD/VHDX, static VDI, flat VMDK, LUKS).</summary>
    Fixed,

    /// <summary>Blocks or clusters are allocated as the guest writes them (qcow2, dynamic VHD/VHDX/VDI, sparse VMDK).</summary>
    Dynamic,

    /// <summary>Only what differs from a backing image is stored (an image with a backing file).</summary>
    Differencing,
}

/// <summary>What one image file is, as <c>qemu-img info --output=json</c> reports it.</summary>
public sealed record ImageInfo
{
    /// <summary>The format and guest size, as an export to CSV shows the object.</summary>
    public override string ToString() => $"{Format}, {VirtualSize} bytes";

    /// <summary>Full path of the file that was inspected.</summary>
    public required string Path { get; init; }

    /// <summary>qemu-img's name of the format (<c>qcow2</c>, <c>raw</c>, <c>vmdk</c>, …), the one spelling libvirt's XML uses too.</summary>
    public string Format => ImageFormat.ToQemuName();

    /// <summary>The format as the engine handles it.</summary>
    internal ImageFormat ImageFormat { get; init; }

    /// <summary>Guest-visible size in bytes (qemu's <c>virtual-size</c>).</summary>
    public required ulong VirtualSize { get; init; }

    /// <summary>Bytes allocated on the host (st_blocks × 512; qemu's <c>actual-size</c>).</summary>
    public required ulong ActualSize { get; init; }

    /// <summary>Length of the file in bytes.</summary>
    public required ulong FileLength { get; init; }

    /// <summary>Cluster or grain or block size in bytes, where the format has one (qemu's <c>cluster-size</c>).</summary>
    public uint? ClusterSize { get; init; }

    /// <summary>Fixed, dynamic or differencing (Get-VHD's VhdType): an image with a backing file is differencing.</summary>
    public DiskType DiskType { get; init; } = DiskType.Dynamic;

    /// <summary>The guest's logical sector size, where the format records one (vhdx; 512 for vhd and vdi).</summary>
    public uint? LogicalSectorSize { get; init; }

    /// <summary>The guest's physical sector size, where the format records one (vhdx; 512 for vhd).</summary>
    public uint? PhysicalSectorSize { get; init; }

    /// <summary>The backing file name as stored in the image (qemu's <c>backing-filename</c>).</summary>
    public string? BackingFile { get; init; }

    /// <summary>The backing file resolved against the image's folder (qemu's <c>full-backing-filename</c>).</summary>
    public string? FullBackingFile { get; init; }

    /// <summary>The backing format as recorded in the image (qemu's <c>backing-filename-format</c>), or null.</summary>
    public string? BackingFormat { get; init; }

    /// <summary>qemu's <c>dirty-flag</c> (qcow2 incompatible bit 0).</summary>
    public bool DirtyFlag { get; init; }

    /// <summary>qcow2-specific details; null for other formats.</summary>
    public Qcow2Details? Qcow2 { get; init; }

    /// <summary>vmdk-specific details; null for other formats.</summary>
    public VmdkDetails? Vmdk { get; init; }

    /// <summary>Encryption method (<c>aes</c>, <c>luks</c>) or null when the image is not encrypted.</summary>
    public string? Encryption { get; init; }

    /// <summary>Internal snapshots (qcow2), in table order.</summary>
    public IReadOnlyList<SnapshotInfo> Snapshots { get; init; } = [];

    /// <summary>The backing chain below this image, nearest first (empty when standalone). Filled by <c>ImageInspector</c>.</summary>
    public IReadOnlyList<ImageInfo> BackingChain { get; init; } = [];

    /// <summary>
    /// Why the chain stops short of the recorded backing file: the host's rule refused it (a raw file outside every
    /// pool, a name that leaves the host root), so it was not read. Null when the chain is whole or simply missing.
    /// </summary>
    public string? BackingRefusal { get; init; }
}

/// <summary>qcow2 header details (qemu's <c>format-specific.data</c>).</summary>
public sealed class Qcow2Details
{
    /// <summary>2 or 3.</summary>
    public required int Version { get; init; }

    /// <summary><c>0.10</c> (v2) or <c>1.1</c> (v3).</summary>
    public string Compat => Version >= 3 ? "1.1" : "0.10";

    public required int RefcountBits { get; init; }

    public required bool LazyRefcounts { get; init; }

    public required bool Corrupt { get; init; }

    /// <summary><c>zlib</c> or <c>zstd</c>.</summary>
    public required string CompressionType { get; init; }

    public required bool ExtendedL2 { get; init; }

    public ulong IncompatibleFeatures { get; init; }

    public ulong CompatibleFeatures { get; init; }

    public ulong AutoclearFeatures { get; init; }

    public string? DataFile { get; init; }
}

/// <summary>vmdk details (qemu's <c>format-specific.data</c> for vmdk).</summary>
public sealed class VmdkDetails
{
    public required string CreateType { get; init; }

    public uint Cid { get; init; }

    public uint ParentCid { get; init; }

    /// <summary>Extent files, resolved to full paths.</summary>
    public IReadOnlyList<string> Extents { get; init; } = [];
}

/// <summary>One internal snapshot of a qcow2 image.</summary>
public sealed class SnapshotInfo
{
    /// <summary>The snapshot's name, as a volume's list of snapshots exports to CSV.</summary>
    public override string ToString() => Name;

    public required string Id { get; init; }

    public required string Name { get; init; }

    public required ulong VmStateSize { get; init; }

    public required DateTimeOffset Date { get; init; }

    public required uint DateSeconds { get; init; }

    public required uint DateNanoseconds { get; init; }

    /// <summary>Guest clock at the snapshot, in nanoseconds.</summary>
    public required ulong VmClockNanoseconds { get; init; }

    /// <summary>Virtual disk size recorded with the snapshot (v3 extra data), else null.</summary>
    public ulong? DiskSize { get; init; }

    /// <summary>Instruction count, or null when absent or disabled (-1).</summary>
    public long? Icount { get; init; }

    public required ulong L1TableOffset { get; init; }

    public required uint L1Size { get; init; }
}

public static class ImageFormats
{
    /// <summary>qemu-img's name of a format: raw, qcow2, qcow, vmdk, vdi, vpc, vhdx, luks, qed, parallels.</summary>
    public static string ToQemuName(this ImageFormat format) => format.ToString().ToLowerInvariant();

    public static bool TryParse(string? name, out ImageFormat format)
    {
        format = ImageFormat.Raw;
        return name is not null && Enum.TryParse(name, ignoreCase: true, out format) && Enum.IsDefined(format);
    }
}
