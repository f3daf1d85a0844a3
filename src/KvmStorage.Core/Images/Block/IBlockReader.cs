namespace KvmStorage.Core.Images.Block;

/// <summary>What a range of an image holds, as qemu's block status reports it.</summary>
public enum ExtentKind
{
    /// <summary>Allocated data (it may still happen to be zeros).</summary>
    Data,

    /// <summary>Reads as zeros without being stored (a zero cluster, a hole in raw, a discarded block).</summary>
    Zero,

    /// <summary>Not allocated anywhere in the chain: reads as zeros; a copy may leave it unallocated.</summary>
    Unallocated,
}

/// <summary>A run of guest bytes of one kind.</summary>
public readonly record struct Extent(ulong Offset, ulong Length, ExtentKind Kind)
{
    public ulong End => Offset + Length;
}

/// <summary>
/// Reads an image's guest-visible contents, through its backing chain. Implementations are safe to call from
/// several threads at once (positional reads, locked caches), so converters can run readers in parallel.
/// </summary>
public interface IBlockReader : IDisposable
{
    /// <summary>What the image is (format, size, chain).</summary>
    ImageInfo Info { get; }

    /// <summary>Guest-visible size in bytes.</summary>
    ulong Size { get; }

    /// <summary>Reads guest bytes at <paramref name="offset"/>; the range must lie within <see cref="Size"/>.</summary>
    void Read(ulong offset, Span<byte> buffer);

    /// <summary>
    /// The extents covering [offset, offset + length), merged through the backing chain, in order and without
    /// gaps, computed from metadata alone (no data is read). Adjacent extents of one kind may or may not be merged.
    /// </summary>
    IEnumerable<Extent> GetExtents(ulong offset, ulong length);
}
