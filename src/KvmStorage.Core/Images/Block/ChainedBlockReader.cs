using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Images.Block;

/// <summary>
/// Reads through a backing chain: what a layer leaves unallocated comes from the next one, and beyond
/// the end of a shorter backing file reads as zeros (qemu's block layer rules).
/// </summary>
internal sealed class ChainedBlockReader : IBlockReader
{
    private readonly ImageLayer[] layers;
    private int disposed;

    public ChainedBlockReader(ImageInfo info, ImageLayer[] layers)
    {
        Info = info;
        this.layers = layers;
    }

    public ImageInfo Info { get; }

    public ulong Size => layers[0].Size;

    public void Read(ulong offset, Span<byte> buffer)
    {
        CheckRange(offset, (ulong)buffer.Length);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        ReadLayer(0, offset, buffer);
    }

    public IEnumerable<Extent> GetExtents(ulong offset, ulong length)
    {
        CheckRange(offset, length);
        return Merge(Walk(0, offset, length, layers.Length));
    }

    /// <summary>How many images the chain has, this one included.</summary>
    internal int LayerCount => layers.Length;

    /// <summary>The image at <paramref name="depth"/> of the chain (0: this one, 1: its backing file, …).</summary>
    internal ImageLayer Layer(int depth) => layers[depth];

    /// <summary>The layers of the chain, top first (the image itself, then its backing files).</summary>
    internal IReadOnlyList<ImageInfo> LayerInfos => [Info, .. Info.BackingChain];

    /// <summary>
    /// The extents of the top <paramref name="depth"/> layers alone: what they leave to the layers below reports as
    /// <see cref="ExtentKind.Unallocated"/> (qemu's <c>bdrv_is_allocated_above</c> with a base).
    /// </summary>
    internal IEnumerable<Extent> GetExtentsAbove(int depth, ulong offset, ulong length)
    {
        CheckRange(offset, length);
        ArgumentOutOfRangeException.ThrowIfNegative(depth);
        return depth == 0 ? [new Extent(offset, length, ExtentKind.Unallocated)] : Merge(Walk(0, offset, length, Math.Min(depth, layers.Length)));
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) == 0)
        {
            foreach (ImageLayer layer in layers)
            {
                layer.Dispose();
            }
        }
    }

    private void CheckRange(ulong offset, ulong length)
    {
        if (offset > Size || length > Size - offset)
        {
            throw new KvmStorageException(
                ErrorKind.InvalidArgument,
                BlockErrorIds.RangeOutOfBounds,
                $"The range at {offset} (+{length} bytes) lies beyond the end of '{Info.Path}' ({Size} bytes).",
                Info.Path);
        }
    }

    private void ReadLayer(int depth, ulong offset, Span<byte> buffer)
    {
        ImageLayer layer = layers[depth];
        while (!buffer.IsEmpty)
        {
            if (offset >= layer.Size)
            {
                buffer.Clear();
                return;
            }

            ulong wanted = Math.Min((ulong)buffer.Length, layer.Size - offset);
            LayerRun run = layer.Map(offset, wanted);
            int n = (int)Math.Min(run.Length, wanted);
            Span<byte> part = buffer[..n];
            switch (run.Kind)
            {
                case RunKind.Data:
                case RunKind.Special:
                    layer.ReadRun(offset, run, part);
                    break;
                case RunKind.Zero:
                    part.Clear();
                    break;
                default:
                    if (depth + 1 < layers.Length)
                    {
                        ReadLayer(depth + 1, offset, part);
                    }
                    else
                    {
                        part.Clear();
                    }

                    break;
            }

            buffer = buffer[n..];
            offset += (ulong)n;
        }
    }

    private IEnumerable<Extent> Walk(int depth, ulong offset, ulong length, int limit)
    {
        ImageLayer layer = layers[depth];
        ulong end = offset + length;
        while (offset < end)
        {
            if (offset >= layer.Size)
            {
                yield return new Extent(offset, end - offset, ExtentKind.Zero);
                yield break;
            }

            ulong wanted = Math.Min(end, layer.Size) - offset;
            LayerRun run = layer.Map(offset, wanted);
            ulong n = Math.Min(run.Length, wanted);
            switch (run.Kind)
            {
                case RunKind.Data:
                case RunKind.Special:
                    yield return new Extent(offset, n, ExtentKind.Data);
                    break;
                case RunKind.Zero:
                    yield return new Extent(offset, n, ExtentKind.Zero);
                    break;
                default:
                    if (depth + 1 < limit)
                    {
                        foreach (Extent below in Walk(depth + 1, offset, n, limit))
                        {
                            yield return below;
                        }
                    }
                    else
                    {
                        yield return new Extent(offset, n, ExtentKind.Unallocated);
                    }

                    break;
            }

            offset += n;
        }
    }

    private static IEnumerable<Extent> Merge(IEnumerable<Extent> extents)
    {
        Extent? pending = null;
        foreach (Extent e in extents)
        {
            if (e.Length == 0)
            {
                continue;
            }

            if (pending is { } p && p.Kind == e.Kind && p.End == e.Offset)
            {
                pending = p with { Length = p.Length + e.Length };
                continue;
            }

            if (pending is { } done)
            {
                yield return done;
            }

            pending = e;
        }

        if (pending is { } last)
        {
            yield return last;
        }
    }
}
