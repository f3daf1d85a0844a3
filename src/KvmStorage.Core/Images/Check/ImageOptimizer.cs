using System.Runtime.InteropServices;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Check;

/// <summary>What <see cref="ImageOptimizer.Optimize"/> did.</summary>
public sealed record ImageOptimizeResult
{
    public required string Path { get; init; }

    /// <summary>qemu-img's name of the format (<c>qcow2</c>, <c>raw</c>, <c>vmdk</c>, …), the one spelling libvirt's XML uses too.</summary>
    public string Format => ImageFormat.ToQemuName();

    /// <summary>The format as the engine handles it.</summary>
    internal ImageFormat ImageFormat { get; init; }

    /// <summary>Host bytes allocated before and after (st_blocks × 512).</summary>
    public required ulong AllocatedBefore { get; init; }

    public required ulong AllocatedAfter { get; init; }

    public ulong BytesFreed => AllocatedBefore > AllocatedAfter ? AllocatedBefore - AllocatedAfter : 0;

    /// <summary>qcow2 data clusters that held only zeros and were dropped (0 for raw).</summary>
    public ulong ClustersFreed { get; init; }

    /// <summary>Whether the image was rewritten into a new file (-Compact).</summary>
    public bool Compacted { get; init; }
}

/// <summary>
/// Gives back the space of data that reads as zeros, through the format's driver (holes punched in raw files, all-zero
/// qcow2 clusters freed); with compaction, the driver's fresh copy replaces the file.
/// </summary>
public static class ImageOptimizer
{

    public static ImageOptimizeResult Optimize(string path, bool compact = false, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = Path.GetFullPath(path);
        using (ImageLock.AcquireForWrite(fullPath))
        {
            ulong before = Allocated(fullPath);
            IImageFormat driver;
            ulong freedClusters;
            using (SafeFileHandle handle = OpenWrite(fullPath))
            {
                driver = ImageFormatRegistry.Driver(ImageFormatRegistry.Detect(ImageInspector.ReadProbe(handle, fullPath)).Format);
                try
                {
                    freedClusters = driver.FreeZeros(handle, fullPath, compact, progress, cancellationToken);
                }
                catch (IOException e)
                {
                    throw new KvmStorageException(ErrorKind.WriteError, ImageErrorIds.ImageWriteFailed, $"Optimizing '{fullPath}' failed: {e.Message}", fullPath, e);
                }
            }

            bool rewritten = compact && Rewrite(fullPath, driver, progress, cancellationToken);

            return new ImageOptimizeResult
            {
                Path = fullPath,
                ImageFormat = driver.Format,
                AllocatedBefore = before,
                AllocatedAfter = Allocated(fullPath),
                ClustersFreed = freedClusters,
                Compacted = rewritten,
            };
        }
    }

    private static ulong Allocated(string path) => FileStatus.Get(path).AllocatedBytes;

    private static SafeFileHandle OpenWrite(string path)
    {
        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw ImageErrors.FromIo(path, e);
        }
    }

    /// <summary>Punches a hole over [<paramref name="offset"/>, +<paramref name="length"/>); refused on file systems that cannot.</summary>
    internal static void PunchHole(SafeFileHandle handle, string path, ulong offset, ulong length)
    {
        if (length == 0)
        {
            return;
        }

        if (!PositionalFile.TryPunchHole(handle, offset, length))
        {
            int errno = Marshal.GetLastPInvokeError();
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, $"the file system cannot punch holes ({Marshal.GetPInvokeErrorMessage(errno)}).");
        }
    }

    /// <summary>
    /// Writes a compact copy under a hidden temporary name, then renames it over the image, unless the copy is no
    /// smaller (an empty or already compact image: the fresh layout may take a cluster more); then the image is kept.
    /// </summary>
    /// <returns>True when the image was replaced by the compact copy.</returns>
    private static bool Rewrite(string path, IImageFormat driver, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        string directory = Path.GetDirectoryName(path)!;

        // What a killed compaction left behind: hidden, but as large as the image.
        AtomicFile.RemoveAbandonedTempFiles(directory);
        string temp = AtomicFile.TempPathFor(path);
        FileStatus status = FileStatus.Get(path);
        try
        {
            using (SafeFileHandle source = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
            // Owner-only until complete: the image's data must not be readable by others while it is copied. Marked
            // alive until closed (AtomicFile.RemoveAbandonedTempFiles leaves it).
            using (FileStream stream = AtomicFile.CreateTemp(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite))
            {
                SafeFileHandle target = stream.SafeFileHandle;
                driver.WriteCompactCopy(source, target, path, progress, cancellationToken);

                PositionalFile.Flush(target);
                FileStatus copy = FileStatus.Get(temp);
                if (copy.AllocatedBytes >= status.AllocatedBytes && copy.Length >= status.Length)
                {
                    File.Delete(temp);
                    return false;
                }

                File.SetUnixFileMode(target, (UnixFileMode)(status.Mode & 0xFFF));
                _ = NativeMethods.chown(temp, (int)status.Uid, (int)status.Gid);

                // Renamed while the lock is still held, so no cleaner can take the finished temporary for abandoned.
                File.Move(temp, path, overwrite: true);
                AtomicFile.SyncDirectory(directory);
                return true;
            }
        }
        catch
        {
            try
            {
                File.Delete(temp);
            }
            catch (IOException)
            {
            }

            throw;
        }
    }
}
