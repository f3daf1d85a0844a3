using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.IO;

namespace KvmStorage.Core.Images.Chains;

/// <summary>What becomes of the overlay (and the layers between it and the base) once their data is in the base.</summary>
public enum OverlayDisposition
{
    /// <summary>Emptied: every layer reads through to the base, which now holds their data (qemu-img commit's default).</summary>
    Empty,

    /// <summary>The overlay and the layers between it and the base are deleted; only the base remains.</summary>
    Remove,

    /// <summary>Left as they are (qemu-img commit -d).</summary>
    Keep,
}

/// <summary>How <see cref="ImageCommitter"/> commits an overlay.</summary>
public sealed class ImageCommitOptions
{
    /// <summary>The image of the overlay's backing chain to commit into (local path); null = its immediate backing file.</summary>
    public string? BasePath { get; init; }

    public OverlayDisposition Overlay { get; init; } = OverlayDisposition.Empty;

    /// <summary>How recorded backing names become files here and which may be read (see <see cref="BackingFileRule"/>); null is qemu's unrestricted rule.</summary>
    public BackingFileRule? BackingRule { get; init; }
}

/// <summary>A checked commit: the overlay, the layers above the base, and the base (local paths, top first).</summary>
public sealed class ImageCommitPlan
{
    internal ImageCommitPlan(ImageInfo overlay, IReadOnlyList<ImageInfo> intermediates, ImageInfo baseImage, ImageCommitOptions options)
    {
        Overlay = overlay;
        Intermediates = intermediates;
        Base = baseImage;
        Options = options;
    }

    public ImageInfo Overlay { get; }

    /// <summary>Layers between the overlay and the base, top first (empty when the base is the immediate backing file).</summary>
    public IReadOnlyList<ImageInfo> Intermediates { get; }

    public ImageInfo Base { get; }

    public ImageCommitOptions Options { get; }

    /// <summary>Whether the base grows to the overlay's size first (qemu-img commit does the same).</summary>
    public bool GrowsBase => Base.VirtualSize < Overlay.VirtualSize;

    /// <summary>Every layer whose own data is committed, top first.</summary>
    public IEnumerable<ImageInfo> Layers => [Overlay, .. Intermediates];
}

/// <summary>What a commit did.</summary>
public sealed record ImageCommitResult(string BasePath, ulong BytesCommitted, IReadOnlyList<string> Emptied, IReadOnlyList<string> Removed);

/// <summary>
/// <c>qemu-img commit</c>: writes what the overlay (and, with a lower base, every layer above the base) holds itself,
/// its zero clusters included, into the base image (raw or qcow2), then empties or removes the layers above it.
/// The overlay's guest view is unchanged at every moment: the base only ever receives data the layers above still
/// hide, and they are emptied (bottom up) or removed only after the base is flushed. A cancelled or crashed commit
/// leaves every image valid and the overlay reading as before.
/// </summary>
public static class ImageCommitter
{
    // Two buffers of this size: one being written into the base while the next chunk is read into the other.
    private const int ChunkBytes = 8 * 1024 * 1024;

    /// <summary>Checks everything that can be checked without writing: chain, formats, sizes, write access and QEMU's locks.</summary>
    public static ImageCommitPlan Plan(string overlayPath, ImageCommitOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(overlayPath);
        ArgumentNullException.ThrowIfNull(options);
        string fullPath = Path.GetFullPath(overlayPath);
        ImageInfo overlay = ImageInspector.Inspect(fullPath, new ImageInspectOptions { ForceShare = true, BackingRule = options.BackingRule });
        if (string.IsNullOrEmpty(overlay.BackingFile) || overlay.BackingChain.Count == 0)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, MergeErrorIds.NoBackingFile, $"'{fullPath}' has no backing file: there is nothing to commit its data into.", fullPath);
        }

        int baseIndex = 0;
        if (options.BasePath is not null)
        {
            string wanted = Identity(options.BasePath);
            baseIndex = -1;
            for (int i = 0; i < overlay.BackingChain.Count; i++)
            {
                if (Identity(overlay.BackingChain[i].Path) == wanted)
                {
                    baseIndex = i;
                    break;
                }
            }

            if (baseIndex < 0)
            {
                string chain = string.Join(" -> ", overlay.BackingChain.Select(b => $"'{b.Path}'"));
                throw new KvmStorageException(ErrorKind.InvalidArgument, MergeErrorIds.BaseNotInChain, $"'{options.BasePath}' is not in the backing chain of '{fullPath}' ({chain}).", options.BasePath);
            }
        }

        ImageInfo baseImage = overlay.BackingChain[baseIndex];
        ImageInfo[] intermediates = [.. overlay.BackingChain.Take(baseIndex)];
        var plan = new ImageCommitPlan(overlay, intermediates, baseImage, options);
        foreach (ImageInfo layer in plan.Layers)
        {
            // Layers have backing files, so raw never is one: of the formats written in place, only qcow2 can be.
            if (!ImageFormatRegistry.Driver(layer.ImageFormat).WritesData)
            {
                throw ImageErrors.NotSupported(MergeErrorIds.LayerFormatNotSupported, layer.Path, $"only qcow2 layers can be committed; this one is {layer.Format}.");
            }

            if (layer.Encryption is not null)
            {
                throw ImageErrors.NotSupported(BlockErrorIds.ImageEncrypted, layer.Path, "the image is encrypted; encrypted images cannot be committed.");
            }
        }

        if (!ImageFormatRegistry.Driver(baseImage.ImageFormat).WritesData)
        {
            throw ImageErrors.NotSupported(MergeErrorIds.BaseFormatNotSupported, baseImage.Path, $"commits go into raw or qcow2 images; the base is {baseImage.Format}.");
        }

        if (plan.GrowsBase && overlay.VirtualSize % 512 != 0)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, $"The base '{baseImage.Path}' would have to grow to {overlay.VirtualSize} bytes, which is not a multiple of 512.", baseImage.Path);
        }

        EnsureWritable(baseImage.Path);
        if (options.Overlay != OverlayDisposition.Keep)
        {
            foreach (ImageInfo layer in plan.Layers)
            {
                EnsureWritable(layer.Path);
            }
        }

        // A running QEMU's locks: the base must be writable, and the layers (read, then emptied or deleted) unused.
        ImageLock.EnsureNotInUse(baseImage.Path, forWrite: true);
        foreach (ImageInfo layer in plan.Layers)
        {
            ImageLock.EnsureNotInUse(layer.Path, forWrite: options.Overlay != OverlayDisposition.Keep);
        }

        // The writer's own refusals (dirty, corrupt, external data file, bitmaps...) before anything is written.
        using (OpenWriter(baseImage, 0, options))
        {
        }

        if (options.Overlay == OverlayDisposition.Empty)
        {
            foreach (ImageInfo layer in plan.Layers)
            {
                using IImageDataWriter probe = OpenWriter(layer, 0, options);
            }
        }

        return plan;
    }

    /// <summary>Plans and runs a commit.</summary>
    public static ImageCommitResult Commit(string overlayPath, ImageCommitOptions options, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default) =>
        Commit(Plan(overlayPath, options), progress, cancellationToken);

    /// <summary>Runs a planned commit under QEMU-compatible write locks of every image it changes.</summary>
    public static ImageCommitResult Commit(ImageCommitPlan plan, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var locks = new List<IDisposable>();
        try
        {
            locks.Add(AcquireWriteLock(plan.Base.Path));
            foreach (ImageInfo layer in plan.Layers)
            {
                locks.Add(plan.Options.Overlay == OverlayDisposition.Keep ? ReadLock(layer.Path) : AcquireWriteLock(layer.Path));
            }

            ulong committed = CopyIntoBase(plan, progress, cancellationToken);

            // The base is durable: from here the layers above it may stop hiding it. No cancellation past this point.
            var emptied = new List<string>();
            var removed = new List<string>();
            switch (plan.Options.Overlay)
            {
                case OverlayDisposition.Empty:
                    // Bottom up: an intermediate emptied while the overlay still holds its data leaves the overlay's
                    // view unchanged (the base holds the same), whereas emptying the overlay first would expose the
                    // intermediate's older data.
                    foreach (ImageInfo layer in plan.Layers.Reverse())
                    {
                        using IImageDataWriter writer = OpenWriter(layer, 0, plan.Options);
                        writer.DiscardAll();
                        writer.Flush();
                        emptied.Add(layer.Path);
                    }

                    break;
                case OverlayDisposition.Remove:
                    // Top down: the overlay goes first, so no remaining image ever names a missing backing file.
                    foreach (ImageInfo layer in plan.Layers)
                    {
                        File.Delete(layer.Path);
                        AtomicFile.SyncDirectory(Path.GetDirectoryName(layer.Path)!);
                        removed.Add(layer.Path);
                    }

                    break;
            }

            return new ImageCommitResult(plan.Base.Path, committed, emptied, removed);
        }
        catch (IOException e)
        {
            throw new KvmStorageException(ErrorKind.WriteError, ImageErrorIds.ImageWriteFailed, $"Committing '{plan.Overlay.Path}' into '{plan.Base.Path}' failed: {e.Message}", plan.Base.Path, e);
        }
        finally
        {
            foreach (IDisposable held in Enumerable.Reverse(locks))
            {
                held.Dispose();
            }
        }
    }

    /// <summary>Writes every range some layer above the base allocates (data or zeros) into the base; returns the bytes.</summary>
    private static ulong CopyIntoBase(ImageCommitPlan plan, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        using ChainedBlockReader source = OpenLayers(plan);
        ulong size = plan.Overlay.VirtualSize;
        List<Extent> extents = [.. source.GetExtents(0, size).Where(e => e.Kind != ExtentKind.Unallocated)];
        ulong total = extents.Aggregate(0UL, (sum, e) => sum + e.Length);
        cancellationToken.ThrowIfCancellationRequested();
        // qemu-img commit grows a smaller base to the overlay's size; the new part reads as zeros, as the overlay read
        // it past the old end, so nothing visible changes.
        using IImageDataWriter target = OpenWriter(plan.Base, size, plan.Options);
        ulong done = 0;
        progress?.Report(new ImageProgress(0, total));

        // The work in chunks: zero extents are one step each; data is read ahead, one chunk while the last is written.
        var steps = new List<(ulong Offset, int Length, bool Zero)>();
        foreach (Extent extent in extents)
        {
            for (ulong position = extent.Offset; position < extent.End;)
            {
                ulong n = extent.Kind == ExtentKind.Zero ? extent.End - position : Math.Min((ulong)ChunkBytes, extent.End - position);
                steps.Add((position, (int)Math.Min(n, int.MaxValue), extent.Kind == ExtentKind.Zero));
                position += Math.Min(n, int.MaxValue);
            }
        }

        byte[][] buffers = [new byte[ChunkBytes], new byte[ChunkBytes]];
        Task<bool>? reading = null;
        try
        {
            reading = steps.Count > 0 ? ReadAhead(source, steps, 0, buffers[0]) : null;
            for (int i = 0; i < steps.Count; i++)
            {
                (ulong position, int n, bool zero) = steps[i];
                bool hasData = reading is not null && reading.GetAwaiter().GetResult();
                byte[] current = buffers[i % 2];
                cancellationToken.ThrowIfCancellationRequested();
                reading = i + 1 < steps.Count ? ReadAhead(source, steps, i + 1, buffers[(i + 1) % 2]) : null;
                if (zero || !hasData)
                {
                    WriteZeroes(target, position, (ulong)n);
                }
                else
                {
                    Write(target, position, current.AsSpan(0, n));
                }

                done += (ulong)n;
                progress?.Report(new ImageProgress(done, total));
            }
        }
        finally
        {
            // Never leave a read running into a buffer, nor a source that is about to be closed.
            if (reading is not null)
            {
                ((IAsyncResult)reading).AsyncWaitHandle.WaitOne();
            }
        }

        target.Flush();
        return total;
    }

    /// <summary>Reads a data step into <paramref name="buffer"/> on the thread pool; true when it holds a non-zero byte. Zero steps read nothing.</summary>
    private static Task<bool>? ReadAhead(ChainedBlockReader source, List<(ulong Offset, int Length, bool Zero)> steps, int index, byte[] buffer)
    {
        (ulong offset, int length, bool zero) = steps[index];
        return zero ? null : Task.Run(() =>
        {
            Span<byte> chunk = buffer.AsSpan(0, length);
            source.Read(offset, chunk);
            return chunk.ContainsAnyExcept((byte)0);
        });
    }

    /// <summary>The layers above the base, read as one chain that stops above the base (unallocated = the base shows through).</summary>
    private static ChainedBlockReader OpenLayers(ImageCommitPlan plan)
    {
        var layers = new List<ImageLayer>();
        try
        {
            foreach (ImageInfo layer in plan.Layers)
            {
                layers.Add(BlockReaders.OpenLayer(layer));
            }

            return new ChainedBlockReader(plan.Overlay, [.. layers]);
        }
        catch
        {
            foreach (ImageLayer layer in layers)
            {
                layer.Dispose();
            }

            throw;
        }
    }

    private static IImageDataWriter OpenWriter(ImageInfo image, ulong minimumSize, ImageCommitOptions options) =>
        ImageFormatRegistry.Driver(image.ImageFormat).OpenDataWriter(image.Path, minimumSize, new BlockOpenOptions { ForceShare = true, BackingRule = options.BackingRule });

    // The overlay may be larger than a base that could not grow to exactly its size (never beyond the base's end).
    private static void Write(IImageDataWriter target, ulong offset, ReadOnlySpan<byte> data) =>
        target.Write((long)offset, data[..(int)Math.Min((ulong)data.Length, (ulong)target.VirtualSize - offset)]);

    private static void WriteZeroes(IImageDataWriter target, ulong offset, ulong length) =>
        target.WriteZeroes((long)offset, (long)Math.Min(length, (ulong)target.VirtualSize - offset));

    /// <summary>Refuses images this process may not write, and images nobody may write (no write bit: a protected golden image).</summary>
    private static void EnsureWritable(string path)
    {
        uint mode = FileStatus.Get(path).Mode;
        if ((mode & 0x92) == 0 || NativeMethods.access(path, NativeMethods.W_OK) != 0)
        {
            throw new KvmStorageException(ErrorKind.PermissionDenied, MergeErrorIds.ImageNotWritable, $"'{path}' is not writable (mode {System.Convert.ToString(mode & 0xFFF, 8)}); committing would change it.", path);
        }
    }

    /// <summary>
    /// Takes the write lock, retrying briefly: a process this one spawns inherits our descriptors between fork and
    /// exec, so the OFD lock of our own previous edit can outlive its handle by a moment and look like another holder.
    /// </summary>
    private static IDisposable AcquireWriteLock(string path)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                return ImageLock.AcquireForWrite(path);
            }
            catch (KvmStorageException e) when (e.ErrorId == ImageErrorIds.ImageInUse && attempt < 8)
            {
                Thread.Sleep(25 * attempt);
            }
        }
    }

    /// <summary>A layer that is only read: refused when a QEMU writes it, otherwise nothing to hold.</summary>
    private static NoLock ReadLock(string path)
    {
        ImageLock.EnsureNotInUse(path, forWrite: false);
        return new NoLock();
    }

    private static string Identity(string path) => ImageInspector.Identity(path);

    private sealed class NoLock : IDisposable
    {
        public void Dispose()
        {
        }
    }
}

/// <summary>Error ids of commits (Merge-Volume).</summary>
public static class MergeErrorIds
{
    /// <summary>The image has no backing file to commit into (InvalidOperation).</summary>
    public const string NoBackingFile = "VolumeHasNoBackingFile";

    /// <summary>The -Base image is not in the overlay's backing chain (InvalidArgument).</summary>
    public const string BaseNotInChain = "BaseNotInBackingChain";

    /// <summary>A layer above the base is not qcow2 (NotSupported).</summary>
    public const string LayerFormatNotSupported = "MergeLayerFormatNotSupported";

    /// <summary>The base is neither raw nor qcow2 (NotSupported).</summary>
    public const string BaseFormatNotSupported = "MergeBaseFormatNotSupported";

    /// <summary>An image the commit would change is not writable (PermissionDenied).</summary>
    public const string ImageNotWritable = "MergeImageNotWritable";

    /// <summary>Other images use the base (or a layer that changes) as backing file; -Force commits anyway (InvalidOperation).</summary>
    public const string BackingShared = "BackingFileShared";

    /// <summary>An image of the chain is attached to a running VM (ResourceBusy).</summary>
    public const string InUseByRunningVM = "VolumeInUseByRunningVM";
}
