using System.Collections.Concurrent;
using System.Numerics;
using System.Security.Cryptography;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Qcow2;
using KvmStorage.Core.Images.Vmdk;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Convert;

/// <summary>
/// Copies an image's guest contents into a new raw, qcow2 or vmdk file, like <c>qemu-img convert</c>: holes and
/// zero extents are never read; data is read in large chunks by parallel workers, zero blocks are dropped, clusters
/// compressed on every core; one writer lays the output down in guest order. The output is built under a hidden
/// temporary name in the destination folder, flushed to disk and renamed only when complete. The source is only read.
/// </summary>
public static class ImageConverter
{
    private const int DefaultChunkBytes = 4 * 1024 * 1024;

    // Buffers in flight (read, compressed, waiting for the writer) never exceed this, whatever the image size.
    private const long MaxBufferedBytes = 96L * 1024 * 1024;

    /// <summary>Converts <paramref name="source"/> into a new image at <paramref name="destinationPath"/>.</summary>
    /// <returns>What the new image is, as the inspector reads it.</returns>
    public static ImageInfo Convert(IBlockReader source, string destinationPath, ConvertOptions options, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentException.ThrowIfNullOrEmpty(destinationPath);
        ArgumentNullException.ThrowIfNull(options);
        string fullPath = Path.GetFullPath(destinationPath);
        Validate(source, fullPath, options);
        string directory = Path.GetDirectoryName(fullPath)!;

        // A raw output is as long as the disk, a preallocated one at least as long: refuse one the file system cannot hold.
        if (options.Format == ImageFormat.Raw || options.Preallocation != Preallocation.Off)
        {
            FileSystemLimits.RequireFits(fullPath, source.Size);
        }

        if (!options.SkipSpaceCheck)
        {
            ulong required = EstimateSize(source, options);
            ulong available = FileSystemSpace.Get(directory).Available;
            if (required > available)
            {
                throw new KvmStorageException(
                    ErrorKind.ResourceUnavailable,
                    ConvertErrorIds.InsufficientSpace,
                    $"Converting to '{fullPath}' needs about {required} bytes but only {available} are free in '{directory}'.",
                    fullPath);
            }
        }

        cancellationToken.ThrowIfCancellationRequested();

        // What a killed conversion left behind: hidden, but it can hold as much space as the output.
        AtomicFile.RemoveAbandonedTempFiles(directory);
        string temp = AtomicFile.TempPathFor(fullPath);
        try
        {
            // Marked alive until closed (AtomicFile.RemoveAbandonedTempFiles leaves it).
            using (FileStream stream = AtomicFile.CreateTemp(temp, options.Mode))
            {
                File.SetUnixFileMode(stream.SafeFileHandle, options.Mode);
                PosixFile.SetOwner(temp, options.Owner, options.Group);
                ConvertTarget target = CreateTarget(stream.SafeFileHandle, temp, fullPath, source.Size, options);
                target.Begin(cancellationToken);
                Copy(source, target, options, progress, cancellationToken);
                target.Complete(cancellationToken);
                cancellationToken.ThrowIfCancellationRequested();
                stream.Flush(flushToDisk: true);

                if (!options.Overwrite && (File.Exists(fullPath) || Directory.Exists(fullPath)))
                {
                    throw Exists(fullPath);
                }

                // Renamed while the lock is still held, so no cleaner can take the finished temporary for abandoned.
                File.Move(temp, fullPath, overwrite: options.Overwrite);
                AtomicFile.SyncDirectory(directory);
            }
        }
        catch (Exception e)
        {
            TryDelete(temp);
            if (e is KvmStorageException or OperationCanceledException)
            {
                throw;
            }

            throw e switch
            {
                IOException when FileSystemLimits.IsTooLarge(e) => FileSystemLimits.TooLarge(fullPath, source.Size, e),
                IOException io when IsNoSpace(io) => new KvmStorageException(ErrorKind.ResourceUnavailable, ConvertErrorIds.InsufficientSpace, $"The file system of '{fullPath}' ran out of space: {e.Message}", fullPath, e),
                UnauthorizedAccessException => new KvmStorageException(ErrorKind.PermissionDenied, ConvertErrorIds.ConvertFailed, $"Cannot write '{fullPath}': {e.Message}", fullPath, e),
                IOException => new KvmStorageException(ErrorKind.WriteError, ConvertErrorIds.ConvertFailed, $"Converting to '{fullPath}' failed: {e.Message}", fullPath, e),
                _ => e,
            };
        }

        return ImageInspector.Inspect(fullPath, new ImageInspectOptions { ForceShare = true, AllowMissingBacking = true });
    }

    /// <summary>
    /// The output size to expect, from the source's extents alone, as <c>qemu-img measure</c>'s "required" figure:
    /// the metadata of a fully allocated image plus every allocated source cluster (zeros inside data included).
    /// </summary>
    public static ulong EstimateSize(IBlockReader source, ConvertOptions options)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(options);
        ulong size = source.Size;
        int unit = UnitOf(options);
        ulong data = 0;
        foreach ((ulong start, ulong end, bool _) in PlanRuns(source, options, unit))
        {
            data += end - start;
        }

        switch (options.Format)
        {
            case ImageFormat.Raw:
                return options.Preallocation is Preallocation.Falloc or Preallocation.Full ? size : data;
            case ImageFormat.Vmdk:
            {
                ulong grains = (size + 65535) / 65536;
                ulong tables = (grains + 511) / 512;
                ulong directorySectors = ((tables * 4) + 511) / 512;
                ulong metadata = (1 + 20 + (2 * (directorySectors + (tables * 4)))) * 512;
                return metadata + 65536 + data + (data / 64) + (data / 65536 * 512) + 512;
            }

            default:
            {
                uint cs = options.ClusterSize ?? 65536;
                Qcow2Layout full = Qcow2Layout.Compute(size, BitOperations.Log2(cs), 16, mapAllData: true, "");
                ulong metadata = (full.TotalClusters - full.DataClusters) * cs;
                return options.Preallocation is Preallocation.Falloc or Preallocation.Full
                    ? metadata + (full.DataClusters * cs)
                    : metadata + data;
            }
        }
    }

    private static void Validate(IBlockReader source, string fullPath, ConvertOptions options)
    {
        if (options.Format is not (ImageFormat.Raw or ImageFormat.Qcow2 or ImageFormat.Vmdk))
        {
            throw new KvmStorageException(ErrorKind.NotSupported, ConvertErrorIds.UnsupportedTargetFormat, $"Converting to {options.Format.ToQemuName()} is not supported (use raw, qcow2 or vmdk).", fullPath);
        }

        if (options.Compress && options.Format != ImageFormat.Qcow2)
        {
            throw Invalid(fullPath, $"{options.Format.ToQemuName()} output cannot be compressed with -Compress (vmdk output is always compressed; raw never).");
        }

        if (options.Compress && options.Preallocation != Preallocation.Off)
        {
            throw Invalid(fullPath, "Compression and preallocation cannot be combined.");
        }

        if (options.Preallocation == Preallocation.Metadata && options.Format != ImageFormat.Qcow2)
        {
            throw Invalid(fullPath, "Metadata preallocation is only for qcow2 output.");
        }

        if (options.Format == ImageFormat.Vmdk && options.Preallocation != Preallocation.Off)
        {
            throw Invalid(fullPath, "A streamOptimized vmdk cannot be preallocated.");
        }

        if (options.BackingFile is not null && (options.Format != ImageFormat.Qcow2 || options.Preallocation != Preallocation.Off))
        {
            throw Invalid(fullPath, "Only a qcow2 output without preallocation can have a backing file.");
        }

        if (options.Format == ImageFormat.Qcow2)
        {
            uint cs = options.ClusterSize ?? 65536;
            if (cs < 512 || cs > 2 * 1024 * 1024 || !BitOperations.IsPow2(cs))
            {
                throw Invalid(fullPath, $"The cluster size {cs} must be a power of two from 512 to 2 MiB.");
            }

            if (options.CompressionType == CompressionType.Zstd && options.Compress && Qcow2ImageWriter.ParseCompat(options.Compat) < 3)
            {
                throw Invalid(fullPath, "zstd compression needs compat 1.1 (qcow2 version 3).");
            }

            _ = Qcow2ImageWriter.ParseCompat(options.Compat);
            _ = Qcow2Layout.Compute(source.Size, BitOperations.Log2(cs), 16, mapAllData: true, fullPath);
        }

        if (options.Format == ImageFormat.Vmdk && source.Size > VmdkWriter.MaxVirtualSize)
        {
            throw Invalid(fullPath, $"A vmdk image holds at most {VmdkWriter.MaxVirtualSize} bytes.");
        }

        string directory = Path.GetDirectoryName(fullPath)!;
        if (!Directory.Exists(directory))
        {
            throw new KvmStorageException(ErrorKind.NotFound, ConvertErrorIds.DestinationFolderNotFound, $"The folder '{directory}' does not exist.", fullPath);
        }

        if (Directory.Exists(fullPath) || (!options.Overwrite && File.Exists(fullPath)))
        {
            throw Exists(fullPath);
        }

        if (!options.Overwrite && string.Equals(Path.GetFullPath(source.Info.Path), fullPath, StringComparison.Ordinal))
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ConvertErrorIds.DestinationIsSource, $"'{fullPath}' is the source image itself.", fullPath);
        }
    }

    private static ConvertTarget CreateTarget(SafeFileHandle handle, string tempPath, string finalPath, ulong size, ConvertOptions options)
    {
        switch (options.Format)
        {
            case ImageFormat.Raw:
                return new RawConvertTarget(handle, tempPath, size, options.Preallocation);
            case ImageFormat.Vmdk:
                return new VmdkStreamConvertTarget(handle, finalPath, size);
            default:
                uint cs = options.ClusterSize ?? 65536;
                if (options.Preallocation != Preallocation.Off)
                {
                    return new Qcow2PreallocatedConvertTarget(handle, tempPath, size, cs, options.Compat, options.Preallocation);
                }

                return new Qcow2ConvertTarget(
                    handle,
                    tempPath,
                    size,
                    cs,
                    Qcow2ImageWriter.ParseCompat(options.Compat),
                    options.Compress ? options.CompressionType : null,
                    options.BackingFile,
                    options.BackingFile is null ? null : options.BackingFormat);
        }
    }

    private static int UnitOf(ConvertOptions options) => options.Format switch
    {
        ImageFormat.Raw => 4096,
        ImageFormat.Vmdk => 65536,
        _ => (int)(options.ClusterSize ?? 65536),
    };

    /// <summary>
    /// The unit-aligned guest ranges to copy, in order, from metadata alone: data extents widened to whole units;
    /// with a backing file, the top image's zero extents too (explicit = whole units that must read as zeros).
    /// </summary>
    private static IEnumerable<(ulong Start, ulong End, bool ExplicitZero)> PlanRuns(IBlockReader source, ConvertOptions options, int unit)
    {
        ulong size = source.Size;
        ulong u = (ulong)unit;
        bool overlay = options.BackingFile is not null;
        IBlockReader map = overlay ? options.AllocationSource ?? source : source;
        ulong pendingStart = 0, pendingEnd = 0;
        bool pendingZero = false;
        foreach (Extent extent in map.GetExtents(0, size))
        {
            if (extent.Length == 0 || extent.Kind == ExtentKind.Unallocated || (extent.Kind == ExtentKind.Zero && !overlay))
            {
                continue;
            }

            ulong start = extent.Offset / u * u;
            ulong end = Math.Min(size, (extent.End + u - 1) / u * u);
            bool zero = extent.Kind == ExtentKind.Zero;
            if (zero)
            {
                // Only whole units can be marked zero; a partly zero unit is copied (read through the chain).
                ulong innerStart = (extent.Offset + u - 1) / u * u;
                ulong innerEnd = extent.End == size ? size : extent.End / u * u;
                if (innerStart > start)
                {
                    foreach (var run in Merge(start, innerStart, false))
                    {
                        yield return run;
                    }
                }

                if (innerEnd > innerStart)
                {
                    foreach (var run in Merge(innerStart, innerEnd, true))
                    {
                        yield return run;
                    }
                }

                if (end > Math.Max(innerEnd, innerStart))
                {
                    foreach (var run in Merge(Math.Max(innerEnd, innerStart), end, false))
                    {
                        yield return run;
                    }
                }
            }
            else
            {
                foreach (var run in Merge(start, end, false))
                {
                    yield return run;
                }
            }
        }

        if (pendingEnd > pendingStart)
        {
            yield return (pendingStart, pendingEnd, pendingZero);
        }

        // Folds a new range into the pending one; a unit shared by two extents is copied rather than zeroed.
        IEnumerable<(ulong, ulong, bool)> Merge(ulong start, ulong end, bool zero)
        {
            if (start < pendingEnd)
            {
                if (!pendingZero)
                {
                    start = pendingEnd;
                }
                else if (!zero)
                {
                    pendingEnd = start;
                }
                else
                {
                    start = pendingEnd;
                }
            }

            if (end <= start)
            {
                yield break;
            }

            if (start == pendingEnd && zero == pendingZero && pendingEnd > pendingStart)
            {
                pendingEnd = end;
                yield break;
            }

            if (pendingEnd > pendingStart)
            {
                yield return (pendingStart, pendingEnd, pendingZero);
            }

            (pendingStart, pendingEnd, pendingZero) = (start, end, zero);
        }
    }

    /// <summary>The pipeline: a planner hands chunks to parallel workers (read, zero check, compress); this thread writes them in order.</summary>
    private static void Copy(IBlockReader source, ConvertTarget target, ConvertOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ulong size = source.Size;
        int unit = target.Unit;
        int threads = Math.Max(1, options.Threads ?? Environment.ProcessorCount);
        bool compress = target.Compressor is not null;
        int perChunk = Math.Max(unit, DefaultChunkBytes / unit * unit);
        long bytesPerSlot = perChunk * (compress ? 2L : 1L);
        int slots = (int)Math.Clamp(Math.Min(2L * threads + 2, MaxBufferedBytes / bytesPerSlot), 2, 64);

        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        CancellationToken token = linked.Token;
        using var gate = new SemaphoreSlim(slots, slots);
        using var queue = new BlockingCollection<Task<ConvertChunk>>();
        var dataPool = new ConcurrentBag<byte[]>();
        var payloadPool = new ConcurrentBag<byte[]>();
        int payloadBytes = (perChunk / unit) * (unit + ClusterCompressor.Slack(unit));

        Task planner = Task.Factory.StartNew(
            () =>
            {
                try
                {
                    foreach ((ulong start, ulong end, bool zero) in PlanRuns(source, options, unit))
                    {
                        bool explicitZero = zero && target.SupportsZeroFlag;
                        ulong step = explicitZero ? 65536UL * (ulong)unit : (ulong)perChunk;
                        for (ulong offset = start; offset < end; offset += Math.Min(step, end - offset))
                        {
                            gate.Wait(token);
                            var chunk = new ConvertChunk(offset, Math.Min(step, end - offset), unit, explicitZero);
                            queue.Add(Task.Run(() => Process(source, target, chunk, dataPool, payloadPool, perChunk, payloadBytes), token), token);
                        }
                    }
                }
                finally
                {
                    queue.CompleteAdding();
                }
            },
            token,
            TaskCreationOptions.LongRunning,
            TaskScheduler.Default);

        ulong reported = 0;
        ulong step = Math.Max(size / 200, 1);
        try
        {
            foreach (Task<ConvertChunk> task in queue.GetConsumingEnumerable(token))
            {
                ConvertChunk chunk = task.GetAwaiter().GetResult();
                token.ThrowIfCancellationRequested();
                target.Write(chunk);
                if (chunk.Data is { } data)
                {
                    dataPool.Add(data);
                }

                if (chunk.Payload is { } payload)
                {
                    payloadPool.Add(payload);
                }

                gate.Release();
                ulong done = chunk.Offset + chunk.Length;
                if (done - reported >= step)
                {
                    reported = done;
                    progress?.Report(new ImageProgress(done, size));
                }
            }

            planner.GetAwaiter().GetResult();
        }
        catch
        {
            // Stop the planner and let every worker finish before the caller closes the source and removes the file.
            linked.Cancel();
            WaitQuietly(planner);
            foreach (Task<ConvertChunk> task in queue)
            {
                WaitQuietly(task);
            }

            throw;
        }

        progress?.Report(new ImageProgress(size, size));
    }

    private static ConvertChunk Process(IBlockReader source, ConvertTarget target, ConvertChunk chunk, ConcurrentBag<byte[]> dataPool, ConcurrentBag<byte[]> payloadPool, int perChunk, int payloadBytes)
    {
        if (chunk.ExplicitZero)
        {
            Array.Fill(chunk.States, UnitState.ZeroFlag);
            return chunk;
        }

        int unit = chunk.Unit;
        byte[] data = dataPool.TryTake(out byte[]? pooled) ? pooled : GC.AllocateUninitializedArray<byte>(perChunk);
        chunk.Data = data;
        int length = (int)chunk.Length;
        source.Read(chunk.Offset, data.AsSpan(0, length));
        int padded = chunk.UnitCount * unit;
        data.AsSpan(length, padded - length).Clear();

        ClusterCompressor? compressor = target.Compressor;
        int payloadAt = 0;
        if (compressor is not null)
        {
            chunk.Payload = payloadPool.TryTake(out byte[]? p) ? p : GC.AllocateUninitializedArray<byte>(payloadBytes);
            chunk.PayloadOffsets = new int[chunk.UnitCount];
            chunk.PayloadLengths = new int[chunk.UnitCount];
        }

        for (int i = 0; i < chunk.UnitCount; i++)
        {
            ReadOnlySpan<byte> bytes = data.AsSpan(i * unit, unit);
            if (!bytes.ContainsAnyExcept((byte)0))
            {
                chunk.States[i] = target.ZeroUnitState;
                continue;
            }

            chunk.States[i] = UnitState.Data;
            if (compressor is not null)
            {
                int n = compressor.Compress(bytes, chunk.Payload.AsSpan(payloadAt), target.CompressLimit);
                if (n >= 0)
                {
                    chunk.States[i] = UnitState.Compressed;
                    chunk.PayloadOffsets![i] = payloadAt;
                    chunk.PayloadLengths![i] = n;
                    payloadAt += n;
                }
            }
        }

        return chunk;
    }

    private static void WaitQuietly(Task task)
    {
        try
        {
            task.Wait();
        }
        catch (AggregateException)
        {
        }
        catch (OperationCanceledException)
        {
        }
    }

    private static bool IsNoSpace(IOException e) => e.HResult == 28 || (e.HResult & 0xFFFF) == 112 || e.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase);

    private static KvmStorageException Invalid(string path, string message) =>
        new(ErrorKind.InvalidArgument, ConvertErrorIds.InvalidConvertOptions, message, path);

    private static KvmStorageException Exists(string path) =>
        new(ErrorKind.AlreadyExists, ConvertErrorIds.DestinationExists, $"'{path}' already exists; conversions never overwrite unless asked to replace.", path);

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
