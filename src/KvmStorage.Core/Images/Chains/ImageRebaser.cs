using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Chains;

/// <summary>
/// Changes the backing file of a qcow2 image, like <c>qemu-img rebase</c>, holding QEMU-compatible write locks.
/// </summary>
/// <remarks>
/// A safe rebase first copies into the image every cluster it leaves to its backing chain where the old and the
/// new backing chains differ (the old contents), flushes, and only then rewrites the header. Cancelled or killed
/// before the header changes, the image holds some extra clusters with exactly what the old chain showed there:
/// its guest view is unchanged and it is still valid. The backing files are only read.
/// </remarks>
public static class ImageRebaser
{
    // Each chunk that differs is one metadata batch of the writer (one flush): large chunks, few flushes.
    private const int ChunkBytes = 8 << 20;

    /// <summary>Rebases <paramref name="path"/>; returns what the image is afterwards.</summary>
    public static ImageInfo Rebase(string path, RebaseOptions options, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(options);
        string fullPath = Path.GetFullPath(path);
        if (!File.Exists(fullPath))
        {
            throw new KvmStorageException(ErrorKind.NotFound, ImageErrorIds.ImageNotFound, $"The image '{fullPath}' does not exist.", fullPath);
        }

        ImageInfo top = ImageInspector.Inspect(fullPath, new ImageInspectOptions { ForceShare = true, ResolveBackingChain = false, BackingRule = options.BackingRule });
        IImageFormat driver = ImageFormatRegistry.Driver(top.ImageFormat);
        if (!driver.SetsBacking || !driver.WritesData)
        {
            throw ImageErrors.NotSupported(RebaseErrorIds.RebaseNotSupported, fullPath, $"{top.Format} images record no backing file; only qcow2 images can be rebased.");
        }

        (string? newPath, ImageFormat? newFormat) = CheckNewBacking(fullPath, options);
        using (ImageLock.AcquireForWriteAfterOwnChildren(fullPath))
        {
            if (!options.Unsafe)
            {
                CopyDifferences(driver, fullPath, top, newPath, newFormat, options.BackingRule, progress, cancellationToken);
            }

            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                using SafeFileHandle handle = File.OpenHandle(fullPath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
                driver.SetBacking(handle, fullPath, options.BackingFile, newFormat?.ToQemuName());
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new KvmStorageException(ErrorKind.WriteError, ImageErrorIds.ImageWriteFailed, $"Rewriting the header of '{fullPath}' failed: {e.Message}", fullPath, e);
            }
        }

        return ImageInspector.Inspect(fullPath, new ImageInspectOptions { ForceShare = true, AllowMissingBacking = true, BackingRule = options.BackingRule });
    }

    /// <summary>Validates the new backing file: it exists, is a regular image file, and does not lead back to the image.</summary>
    private static (string? Path, ImageFormat? Format) CheckNewBacking(string fullPath, RebaseOptions options)
    {
        if (options.BackingFile is null)
        {
            return (null, null);
        }

        if (options.BackingFile.Length == 0)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidBackingName, "The backing file name is empty; pass null to make the image standalone.", fullPath);
        }

        if (options.BackingFile.Contains("://", StringComparison.Ordinal))
        {
            throw ImageErrors.NotSupported(RebaseErrorIds.BackingNotAllowed, fullPath, $"network backing files ('{options.BackingFile}') are not supported.");
        }

        // The one rule for backing files: a raw or unrecognised file outside every pool, or a name leaving the host
        // root, is refused before anything is read from it.
        string newPath = ImageInspector.ResolveCheckedBackingPath(fullPath, options.BackingFile, options.BackingRule);
        if (!File.Exists(newPath))
        {
            throw new KvmStorageException(ErrorKind.NotFound, ImageErrorIds.BackingFileNotFound, $"The new backing file '{options.BackingFile}' (resolved to '{newPath}') does not exist.", fullPath);
        }

        if (!ImageInspector.IsRegularFile(newPath))
        {
            throw new KvmStorageException(ErrorKind.PermissionDenied, RebaseErrorIds.BackingNotAllowed, $"'{newPath}' is not a regular file; it cannot be a backing file.", fullPath);
        }

        string self = ImageInspector.Identity(fullPath);
        if (ImageInspector.Identity(newPath) == self)
        {
            throw ImageErrors.Argument(RebaseErrorIds.RebaseWouldLoop, $"'{fullPath}' cannot be its own backing file.", fullPath);
        }

        ImageInfo backing = ImageInspector.Inspect(newPath, new ImageInspectOptions
        {
            ForceShare = true,
            Format = options.BackingFormat,
            AllowMissingBacking = true,
            BackingRule = options.BackingRule,
        });
        foreach (ImageInfo below in backing.BackingChain)
        {
            if (ImageInspector.Identity(below.Path) == self)
            {
                throw ImageErrors.Argument(RebaseErrorIds.RebaseWouldLoop, $"'{newPath}' is backed by '{fullPath}' itself (through its chain); rebasing onto it would make a loop.", fullPath);
            }
        }

        return (newPath, backing.ImageFormat);
    }

    /// <summary>Writes the old chain's contents into every unallocated cluster where the new chain reads differently.</summary>
    private static void CopyDifferences(IImageFormat driver, string fullPath, ImageInfo top, string? newPath, ImageFormat? newFormat, BackingFileRule? rule, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        if (top.BackingFile is null && newPath is null)
        {
            return;
        }

        // What the image leaves to its backing chain, read from its metadata before anything changes.
        List<Extent> pending;
        using (IBlockReader own = TopLayerReader.Open(fullPath, new BlockOpenOptions { ForceShare = true, Format = top.ImageFormat, BackingRule = rule }))
        {
            pending = [.. own.GetExtents(0, top.VirtualSize).Where(e => e.Kind == ExtentKind.Unallocated)];
        }

        ulong total = pending.Aggregate(0UL, (sum, e) => sum + e.Length);
        progress?.Report(new ImageProgress(0, total));
        if (total == 0)
        {
            return;
        }

        using IBlockReader? oldChain = OpenOldChain(fullPath, top, rule);
        using IBlockReader? newChain = newPath is null ? null : BlockReaders.Open(newPath, new BlockOpenOptions { ForceShare = true, Format = newFormat, BackingRule = rule });
        using IImageDataWriter writer = driver.OpenDataWriter(fullPath, 0, new BlockOpenOptions { ForceShare = true, BackingRule = rule });
        uint cluster = (uint)writer.ClusterSize;
        int chunk = (int)Math.Max(cluster, ChunkBytes / cluster * cluster);
        byte[] oldData = new byte[chunk];
        byte[] newData = new byte[chunk];
        ulong done = 0;

        // Found once: the layers of the old chain are the same for every extent.
        int common = CommonBaseDepth(oldChain, newPath, newFormat);
        try
        {
            foreach (Extent extent in pending)
            {
                // Only ranges where the two chains can read differently are read at all; the rest counts as done.
                ulong covered = extent.Offset;
                foreach ((ulong rangeStart, ulong rangeEnd) in RangesThatMayDiffer(oldChain, newChain, common, extent))
                {
                    // Widened to whole clusters of the image (never outside the extent) so each cluster is compared whole.
                    ulong start = Math.Max(covered, Math.Max(extent.Offset, rangeStart / cluster * cluster));
                    ulong stop = Math.Min(extent.End, (rangeEnd + cluster - 1) / cluster * cluster);
                    for (ulong offset = start; offset < stop;)
                    {
                        cancellationToken.ThrowIfCancellationRequested();

                        // Chunks end on cluster boundaries so each cluster is compared (and written) whole.
                        ulong end = Math.Min(stop, ((offset / cluster) * cluster) + (ulong)chunk);
                        CompareAndCopy(writer, oldChain, newChain, offset, (int)(end - offset), cluster, oldData, newData);
                        offset = end;
                    }

                    if (stop > covered)
                    {
                        done += stop - covered;
                        covered = stop;
                        progress?.Report(new ImageProgress(done, total));
                    }
                }

                done += extent.End - covered;
                progress?.Report(new ImageProgress(done, total));
            }
        }
        finally
        {
            // Whatever was copied is made durable before the header can change (and on cancellation, too: the
            // image stays valid either way, but a flushed state is the one a crash leaves).
            writer.Flush();
        }
    }

    /// <summary>
    /// The parts of <paramref name="extent"/> where the old and the new backing chains may read differently, from
    /// metadata alone (qemu-img rebase's rules): when the new backing file is a layer of the old chain, only what the
    /// layers above it allocate; otherwise wherever either chain holds something other than zeros.
    /// </summary>
    private static IEnumerable<(ulong Start, ulong End)> RangesThatMayDiffer(IBlockReader? oldChain, IBlockReader? newChain, int common, Extent extent)
    {
        if (common >= 0)
        {
            // Below the common layer both chains are the same files: only the layers above it can differ. Past the end
            // of the old backing file the old chain reads zeros, so there the general rule applies.
            ulong within = Math.Min(extent.End, Math.Max(extent.Offset, oldChain!.Size));
            if (within > extent.Offset)
            {
                foreach (Extent above in ((ChainedBlockReader)oldChain).GetExtentsAbove(common, extent.Offset, within - extent.Offset))
                {
                    if (above.Kind != ExtentKind.Unallocated)
                    {
                        yield return (above.Offset, above.End);
                    }
                }
            }

            if (within == extent.End)
            {
                yield break;
            }

            extent = new Extent(within, extent.End - within, extent.Kind);
        }

        // Ranges both chains read as zeros without storing anything are equal; everything else is compared.
        List<Extent> oldExtents = StoredExtents(oldChain, extent);
        List<Extent> newExtents = StoredExtents(newChain, extent);
        int i = 0, j = 0;
        while (i < oldExtents.Count || j < newExtents.Count)
        {
            Extent next = j >= newExtents.Count || (i < oldExtents.Count && oldExtents[i].Offset <= newExtents[j].Offset) ? oldExtents[i++] : newExtents[j++];
            yield return (next.Offset, next.End);
        }
    }

    /// <summary>The extents of a chain within <paramref name="range"/> that hold data (zeros, holes and unallocated ranges left out).</summary>
    private static List<Extent> StoredExtents(IBlockReader? chain, Extent range)
    {
        if (chain is null || range.Offset >= chain.Size)
        {
            return [];
        }

        ulong length = Math.Min(range.Length, chain.Size - range.Offset);
        return [.. chain.GetExtents(range.Offset, length).Where(e => e.Kind == ExtentKind.Data)];
    }

    /// <summary>
    /// How many layers of the old chain lie above the new backing file when the new one is itself a layer of the old
    /// chain (the same file, read as the same format): 0 when it is the old backing file, -1 when it is not in the chain.
    /// </summary>
    private static int CommonBaseDepth(IBlockReader? oldChain, string? newPath, ImageFormat? newFormat)
    {
        if (oldChain is not ChainedBlockReader chained || newPath is null)
        {
            return -1;
        }

        string identity = ImageInspector.Identity(newPath);
        IReadOnlyList<ImageInfo> layers = chained.LayerInfos;
        for (int depth = 0; depth < layers.Count; depth++)
        {
            if (layers[depth].ImageFormat == newFormat && ImageInspector.Identity(layers[depth].Path) == identity)
            {
                return depth;
            }
        }

        return -1;
    }

    /// <summary>Compares one chunk of both chains and writes the old contents of every cluster that differs.</summary>
    private static void CompareAndCopy(IImageDataWriter writer, IBlockReader? oldChain, IBlockReader? newChain, ulong offset, int length, uint cluster, byte[] oldData, byte[] newData)
    {
        // The two chains are read side by side; both reads end before the buffers are looked at.
        SideBySide.Run(() => ReadView(oldChain, offset, oldData.AsSpan(0, length)), () => ReadView(newChain, offset, newData.AsSpan(0, length)));

        // Runs of adjacent clusters that need the same kind of write go to the writer as one call (one metadata
        // batch instead of one per cluster).
        int runStart = 0, runLength = 0;
        bool runZeros = false;
        for (int start = 0; start < length;)
        {
            int piece = (int)Math.Min((ulong)(length - start), cluster - ((offset + (ulong)start) % cluster));
            ReadOnlySpan<byte> before = oldData.AsSpan(start, piece);
            bool differs = !before.SequenceEqual(newData.AsSpan(start, piece));

            // Zeros are written as data when the image has no backing file yet: the writer would otherwise leave
            // such clusters unallocated, which reads the new backing file once the header names it.
            bool zeros = differs && writer.HasBackingFile && !before.ContainsAnyExcept((byte)0);
            if (runLength > 0 && (!differs || zeros != runZeros))
            {
                WriteRun(writer, offset, oldData, runStart, runLength, runZeros);
                runLength = 0;
            }

            if (differs)
            {
                if (runLength == 0)
                {
                    runStart = start;
                    runZeros = zeros;
                }

                runLength += piece;
            }

            start += piece;
        }

        if (runLength > 0)
        {
            WriteRun(writer, offset, oldData, runStart, runLength, runZeros);
        }
    }

    private static void WriteRun(IImageDataWriter writer, ulong chunkOffset, byte[] data, int start, int length, bool zeros)
    {
        long at = (long)chunkOffset + start;
        if (zeros)
        {
            writer.WriteZeroes(at, length);
        }
        else
        {
            writer.Write(at, data.AsSpan(start, length));
        }
    }

    private static IBlockReader? OpenOldChain(string fullPath, ImageInfo top, BackingFileRule? rule)
    {
        if (top.BackingFile is null || top.FullBackingFile is null)
        {
            return null;
        }

        // The current backing file is read into the image: the rule sees it before its existence is even tested.
        ImageInspector.ResolveCheckedBackingPath(fullPath, top.BackingFile, rule);
        if (!File.Exists(top.FullBackingFile))
        {
            throw new KvmStorageException(
                ErrorKind.NotFound,
                RebaseErrorIds.CurrentBackingMissing,
                $"The current backing file '{top.BackingFile}' of '{fullPath}' does not exist, so a safe rebase cannot tell what the guest sees. If the file was moved or renamed, rebase with -Unsafe onto its new path.",
                fullPath);
        }

        ImageFormat? format = ImageFormats.TryParse(top.BackingFormat, out ImageFormat recorded) ? recorded : null;
        return BlockReaders.Open(top.FullBackingFile, new BlockOpenOptions { ForceShare = true, Format = format, BackingRule = rule });
    }

    /// <summary>Guest bytes of a chain at <paramref name="offset"/>; past its end (or without a chain) zeros.</summary>
    private static void ReadView(IBlockReader? reader, ulong offset, Span<byte> buffer)
    {
        int readable = reader is null || offset >= reader.Size ? 0 : (int)Math.Min((ulong)buffer.Length, reader.Size - offset);
        if (readable > 0)
        {
            reader!.Read(offset, buffer[..readable]);
        }

        buffer[readable..].Clear();
    }
}
