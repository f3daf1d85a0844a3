using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;

namespace KvmStorage.Core.Images.Map;

/// <summary>
/// The allocation map of an image through its backing chain, equal to <c>qemu-img map --output=json</c>: for each run,
/// the first image of the chain that holds data or zeros for it (qemu's get_block_status: one more depth per image that
/// leaves the run unallocated), then consecutive runs merged when they agree on data, zero, depth, presence and file and
/// their offsets follow each other (or neither has one). Metadata only: no guest data is read.
/// </summary>
public static class ImageMapper
{
    /// <summary>The map of [<paramref name="start"/>, <paramref name="start"/> + <paramref name="length"/>) of <paramref name="path"/> (to its end when null).</summary>
    public static IReadOnlyList<MapExtent> Map(string path, BlockOpenOptions? options = null, ulong start = 0, ulong? length = null, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        using IBlockReader reader = BlockReaders.Open(path, (options ?? new BlockOpenOptions()).ForMetadata());
        return Map(reader, start, length, progress, cancellationToken);
    }

    /// <summary>The map of an open image (see <see cref="Map(string, BlockOpenOptions?, ulong, ulong?, IProgress{ImageProgress}?, CancellationToken)"/>).</summary>
    public static IReadOnlyList<MapExtent> Map(IBlockReader image, ulong start = 0, ulong? length = null, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (image is not ChainedBlockReader chain)
        {
            throw new ArgumentException("Only images opened by BlockReaders can be mapped.", nameof(image));
        }

        // A length past the end is clipped to it, as qemu-img map clips --max-length.
        ulong size = chain.Size;
        if (start > size)
        {
            throw OutOfRange(chain.Info.Path, start, size);
        }

        ulong end = length is { } l && l < size - start ? start + l : size;
        var extents = new List<MapExtent>();
        MapExtent? current = null;
        ulong offset = start;
        ulong step = Math.Max((end - start) / 200, 1);
        ulong reported = start;
        while (offset < end)
        {
            cancellationToken.ThrowIfCancellationRequested();
            MapExtent next = BlockStatus(chain, offset, end - offset);
            if (current is not null && Mergeable(current, next))
            {
                current = current with { Length = current.Length + next.Length };
            }
            else
            {
                if (current is not null)
                {
                    extents.Add(current);
                }

                current = next;
            }

            offset = next.End;
            if (offset - reported >= step)
            {
                reported = offset;
                progress?.Report(new ImageProgress(offset - start, end - start));
            }
        }

        if (current is not null)
        {
            extents.Add(current);
        }

        progress?.Report(new ImageProgress(end - start, end - start));
        return extents;
    }

    /// <summary>qemu-img's get_block_status: the first image of the chain that holds data or zeros for the run at <paramref name="offset"/>.</summary>
    private static MapExtent BlockStatus(ChainedBlockReader chain, ulong offset, ulong bytes)
    {
        int depth = 0;
        while (true)
        {
            (LayerStatus status, bool allocated) = LayerBlockStatus(chain, depth, offset, bytes);
            bytes = status.Length;
            if (status.Data || status.Zero || depth + 1 == chain.LayerCount)
            {
                HostFile? file = status.OffsetValid ? status.In ?? chain.Layer(depth).File : null;
                return new MapExtent
                {
                    Start = offset,
                    Length = bytes,
                    Data = status.Data,
                    Zero = status.Zero,
                    Depth = depth,
                    Present = allocated,
                    Offset = status.OffsetValid ? status.Offset : null,
                    File = file?.Path,
                };
            }

            depth++;
        }
    }

    /// <summary>
    /// qemu's bdrv_co_block_status of one image: the driver's answer for at most <paramref name="bytes"/> (clipped to the
    /// image's size); allocated when it says data or zeros; else zeros (unallocated) when nothing lies below or the
    /// backing file ends before the run; and, where the driver asks, the file's holes beneath data reported as zeros.
    /// </summary>
    private static (LayerStatus Status, bool Allocated) LayerBlockStatus(ChainedBlockReader chain, int depth, ulong offset, ulong bytes)
    {
        ImageLayer layer = chain.Layer(depth);
        bytes = Math.Min(bytes, layer.Size - offset);
        LayerStatus status = layer.Status(offset, bytes);
        if (status.Length == 0 || status.Length > bytes)
        {
            throw BlockErrors.Mapping(layer.File.Path, $"the block status at {offset} covers {status.Length} bytes.");
        }

        bool allocated = status.Data || status.Zero;
        if (!allocated && layer.SupportsBacking)
        {
            bool last = depth + 1 == chain.LayerCount;
            if (last || offset >= chain.Layer(depth + 1).Size)
            {
                status = status with { Zero = true };
            }
        }

        if (status.Recurse && status.Data && !status.Zero && status.OffsetValid)
        {
            // qemu asks the file beneath: a hole (or the end of the file) reads as zeros under the data.
            HostFile file = status.In ?? layer.File;
            (bool data, ulong length) = file.Probe(status.Offset, status.Length);
            status = status with { Length = Math.Min(length, status.Length), Zero = !data };
        }

        return (status, allocated);
    }

    /// <summary>qemu-img's entry_mergeable.</summary>
    private static bool Mergeable(MapExtent current, MapExtent next) =>
        current.Length > 0
        && current.Zero == next.Zero
        && current.Data == next.Data
        && current.Depth == next.Depth
        && current.Present == next.Present
        && string.Equals(current.File, next.File, StringComparison.Ordinal)
        && current.Offset.HasValue == next.Offset.HasValue
        && (current.Offset is not { } o || o + current.Length == next.Offset);

    /// <summary>An image cannot be mapped past its end.</summary>
    internal static KvmStorageException OutOfRange(string path, ulong start, ulong size) =>
        new(ErrorKind.InvalidArgument, BlockErrorIds.RangeOutOfBounds, $"The map cannot start at {start}: '{path}' holds {size} bytes.", path);
}
