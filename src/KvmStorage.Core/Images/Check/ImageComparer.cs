using KvmStorage.Core.Images.Block;

namespace KvmStorage.Core.Images.Check;

/// <summary>The result of comparing two images' guest-visible contents, like <c>qemu-img compare</c>.</summary>
public sealed class ImageCompareResult
{
    public required string ReferencePath { get; init; }

    public required string DifferencePath { get; init; }

    public required ulong ReferenceSize { get; init; }

    public required ulong DifferenceSize { get; init; }

    /// <summary>Whether the guest sees the same bytes (qemu-img compare exit code 0).</summary>
    public required bool Identical { get; init; }

    /// <summary>
    /// The first differing 512-byte sector's offset, as qemu-img compare prints it ("Content mismatch at offset");
    /// null when identical or when only the sizes differ in strict mode.
    /// </summary>
    public ulong? FirstDifferenceOffset { get; init; }

    /// <summary>The sizes differ (in strict mode this alone makes the images different).</summary>
    public bool SizeMismatch => ReferenceSize != DifferenceSize;
}

/// <summary>Compares two images through their backing chains without reading what both sides know to be zeros.</summary>
public static class ImageComparer
{
    private const int Sector = 512;
    private const ulong Chunk = 4 * 1024 * 1024;

    /// <summary>
    /// Compares the guest-visible contents of <paramref name="referencePath"/> and <paramref name="differencePath"/>.
    /// A size difference counts only when the extra part of the larger image is not all zeros, unless
    /// <paramref name="strict"/> is set. Opening follows <see cref="BlockReaders.Open"/> (typed errors, locks).
    /// </summary>
    public static ImageCompareResult Compare(string referencePath, string differencePath, bool strict = false, BlockOpenOptions? options = null, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(referencePath);
        ArgumentException.ThrowIfNullOrEmpty(differencePath);
        using IBlockReader a = BlockReaders.Open(referencePath, options);
        using IBlockReader b = BlockReaders.Open(differencePath, options);
        ulong common = Math.Min(a.Size, b.Size);
        ulong total = Math.Max(a.Size, b.Size);
        ImageCompareResult Result(bool identical, ulong? offset) => new()
        {
            ReferencePath = a.Info.Path,
            DifferencePath = b.Info.Path,
            ReferenceSize = a.Size,
            DifferenceSize = b.Size,
            Identical = identical,
            FirstDifferenceOffset = offset,
        };

        if (strict && a.Size != b.Size)
        {
            return Result(false, null);
        }

        byte[] bufferA = new byte[Chunk];
        byte[] bufferB = new byte[Chunk];
        using (IEnumerator<Extent> ea = a.GetExtents(0, common).GetEnumerator())
        using (IEnumerator<Extent> eb = b.GetExtents(0, common).GetEnumerator())
        {
            Extent? ca = null, cb = null;
            ulong position = 0;
            while (position < common)
            {
                cancellationToken.ThrowIfCancellationRequested();
                ca = Advance(ea, ca, position);
                cb = Advance(eb, cb, position);
                bool zeroA = ca.Value.Kind != ExtentKind.Data, zeroB = cb.Value.Kind != ExtentKind.Data;

                // Where both read as zeros nothing is read, whatever the length: the walk costs what the images hold,
                // not what they declare (an empty 4 PiB qcow2 is a handful of extents). Data is compared a chunk at a time.
                ulong end = Math.Min(Math.Min(ca.Value.End, cb.Value.End), zeroA && zeroB ? common : Math.Min(common, position + Chunk));
                if (!(zeroA && zeroB))
                {
                    int length = (int)(end - position);
                    int same = Differ(a, zeroA, b, zeroB, position, bufferA.AsMemory(0, length), bufferB.AsMemory(0, length));
                    if (same < length)
                    {
                        return Result(false, AlignDown(position + (ulong)same));
                    }
                }

                position = end;
                progress?.Report(new ImageProgress(position, total));
            }
        }

        // The part only the larger image has must read as zeros (qemu's check_empty_sectors).
        IBlockReader larger = a.Size > b.Size ? a : b;
        foreach (Extent extent in larger.GetExtents(common, larger.Size - common))
        {
            if (extent.Kind != ExtentKind.Data)
            {
                continue;
            }

            for (ulong position = extent.Offset; position < extent.End; position += Chunk)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int length = (int)Math.Min(Chunk, extent.End - position);
                Span<byte> span = bufferA.AsSpan(0, length);
                larger.Read(position, span);
                int nonZero = span.IndexOfAnyExcept((byte)0);
                if (nonZero >= 0)
                {
                    return Result(false, AlignDown(position + (ulong)nonZero));
                }

                progress?.Report(new ImageProgress(position + (ulong)length, total));
            }
        }

        progress?.Report(new ImageProgress(total, total));
        return Result(true, null);
    }

    private static ulong AlignDown(ulong offset) => offset / Sector * Sector;

    /// <summary>
    /// How many leading bytes of one chunk read the same in both images. Where both hold data, the two reads run side
    /// by side (block readers are safe to share between threads); against a zero side, only the data side is read.
    /// </summary>
    private static int Differ(IBlockReader a, bool zeroA, IBlockReader b, bool zeroB, ulong offset, Memory<byte> bufferA, Memory<byte> bufferB)
    {
        if (zeroA || zeroB)
        {
            Span<byte> data = zeroA ? bufferB.Span : bufferA.Span;
            (zeroA ? b : a).Read(offset, data);
            int nonZero = data.IndexOfAnyExcept((byte)0);
            return nonZero < 0 ? data.Length : nonZero;
        }

        SideBySide.Run(() => a.Read(offset, bufferA.Span), () => b.Read(offset, bufferB.Span));
        return bufferA.Span.CommonPrefixLength(bufferB.Span);
    }

    private static Extent Advance(IEnumerator<Extent> extents, Extent? current, ulong position)
    {
        while (current is null || current.Value.End <= position)
        {
            if (!extents.MoveNext())
            {
                throw new InvalidOperationException("The block reader's extents do not cover the image.");
            }

            current = extents.Current;
        }

        return current.Value;
    }
}
