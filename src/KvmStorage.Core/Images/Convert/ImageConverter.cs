using System.Runtime.CompilerServices;
using System.Collections.Concurrent;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.IO;

namespace KvmStorage.Core.Images.Convert;

/// <summary>
/// Copies an image's guest contents into a new raw, qcow2, vmdk, vhdx, vpc or vdi file, like <c>qemu-img convert</c>: holes and
/// zero extents are never read; data is read in large chunks by parallel workers, zero blocks are dropped, clusters
/// compressed on every core; one writer lays the output down in guest order. The output is built under a hidden
/// temporary name in the destination folder, flushed to disk and renamed only when complete. The source is only read.
/// </summary>
public static class ImageConverter
{
    private const int DefaultChunkBytes = 4 * 1024 * 1024;

    // Buffers in flight (read, compressed, waiting for the writer) never exceed this, whatever the image size or the
    // number of cores: the engine stays well under 64 MiB.
    private const long MaxBufferedBytes = 48L * 1024 * 1024;

    /// <summary>Converts <paramref name="source"/> into a new image at <paramref name="destinationPath"/>.</summary>
    /// <returns>What the new image is, as the inspector reads it.</returns>
    public static ImageInfo Convert(IBlockReader source, string destinationPath, ConvertOptions options, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentException.ThrowIfNullOrEmpty(destinationPath);
        ArgumentNullException.ThrowIfNull(options);
        string fullPath = Path.GetFullPath(destinationPath);
        ConvertOutput output = Validate(source, fullPath, options);
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
                using ConvertTarget target = output.CreateTarget(stream.SafeFileHandle, temp, fullPath, source.Size, options);
                target.Begin(cancellationToken);
                Copy(source, target, options, new WriteBehind(stream.SafeFileHandle), progress, cancellationToken);
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
        ConvertOutput output = OutputOf(EffectiveFormat(options), string.Empty);
        int unit = output.Unit(options);
        ulong data = 0;
        foreach ((ulong start, ulong end, bool _) in PlanRuns(source, options, unit))
        {
            data += end - start;
        }

        return output.EstimateSize(source.Size, data, options);
    }

    /// <summary>The shared option checks, in qemu-img's order, then the output format's own; returns the output.</summary>
    private static ConvertOutput Validate(IBlockReader source, string fullPath, ConvertOptions options)
    {
        ConvertOutput output = OutputOf(EffectiveFormat(options), fullPath);
        if (options.Encryption is not null)
        {
            if (!output.TakesEncryption)
            {
                throw Invalid(fullPath, $"{options.Format.ToQemuName()} output cannot be encrypted; qcow2 and raw (a LUKS file) can.");
            }

            if (options.Compress)
            {
                throw Invalid(fullPath, "Compression and encryption cannot be combined (qemu refuses them together too).");
            }

            if (options.Preallocation != Preallocation.Off)
            {
                throw Invalid(fullPath, "An encrypted output cannot be preallocated.");
            }
        }

        if (options.Compress && !output.TakesCompress)
        {
            throw Invalid(fullPath, $"{options.Format.ToQemuName()} output cannot be compressed with -Compress (vmdk output is always compressed; raw never).");
        }

        if (options.Compress && options.Preallocation != Preallocation.Off)
        {
            throw Invalid(fullPath, "Compression and preallocation cannot be combined.");
        }

        if (options.Preallocation == Preallocation.Metadata && !output.TakesMetadataPreallocation)
        {
            throw Invalid(fullPath, "Metadata preallocation is only for qcow2 output.");
        }

        if (options.Preallocation != Preallocation.Off && !output.TakesPreallocation)
        {
            throw Invalid(fullPath, $"A {output.Name} cannot be preallocated.");
        }

        if (options.Fixed && !output.TakesFixed)
        {
            throw Invalid(fullPath, $"A {output.Name} has no fixed variant; vhdx, vpc and vdi have.");
        }

        if (options.ForceSize && !output.TakesForceSize)
        {
            throw Invalid(fullPath, "Forcing the size applies to vpc (VHD) output only.");
        }

        if (options.BackingFile is not null && (!output.TakesBackingFile || options.Preallocation != Preallocation.Off))
        {
            throw Invalid(fullPath, "Only a qcow2 output without preallocation can have a backing file.");
        }

        output.Validate(source.Size, fullPath, options);

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

        return output;
    }

    /// <summary>A raw output that is encrypted is a LUKS file, as libvirt's raw volumes with LUKS encryption are.</summary>
    private static ImageFormat EffectiveFormat(ConvertOptions options) =>
        options.Format == ImageFormat.Raw && options.Encryption is not null ? ImageFormat.Luks : options.Format;

    private static ConvertOutput OutputOf(ImageFormat format, string path) =>
        ImageFormatRegistry.Find(format)?.ConvertOutput
        ?? throw new KvmStorageException(ErrorKind.NotSupported, ConvertErrorIds.UnsupportedTargetFormat, $"Converting to {format.ToQemuName()} is not supported (use raw, qcow2, vmdk, vhdx, vpc or vdi).", path);

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
    private static void Copy(IBlockReader source, ConvertTarget target, ConvertOptions options, WriteBehind writeBehind, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
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
                    IEnumerable<(ulong Start, ulong End, bool ExplicitZero)> runs = target.WritesEverything ? [(0, size, false)] : PlanRuns(source, options, unit);
                    foreach ((ulong start, ulong end, bool zero) in runs)
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
                    // The device writes this chunk out while the next ones are read: the final fsync waits for the tail only.
                    writeBehind.Written((long)chunk.Length);
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

    // Loops over every entry or unit: optimised on first use (see Qcow2Checker.Analysis.CheckL2).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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

        target.Prepare(chunk);
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

    private static KvmStorageException Invalid(string path, string message) => ConvertOutput.Invalid(path, message);

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
