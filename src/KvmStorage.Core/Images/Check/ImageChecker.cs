using KvmStorage.Core.Errors;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Check;

/// <summary>Checks an image's metadata for consistency and optionally repairs it, like <c>qemu-img check [-r leaks|all]</c>.</summary>
public static class ImageChecker
{
    /// <summary>
    /// Checks the image at <paramref name="path"/>. Without repair the file is opened read-only and only a shared
    /// lock check is made (a running VM that writes the image makes the check fail with <c>ImageInUse</c>); a repair
    /// takes QEMU's write locks. Raw images pass with nothing to check. Throws <c>KvmStorageException</c> when the
    /// image cannot be opened at all (qemu-img check's exit code 1).
    /// </summary>
    public static ImageCheckResult Check(string path, ImageRepairMode repair = ImageRepairMode.None, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default) =>
        Check(path, repair, forceShare: false, progress, cancellationToken);

    /// <summary>
    /// As <see cref="Check(string, ImageRepairMode, IProgress{ImageProgress}?, CancellationToken)"/>; with
    /// <paramref name="forceShare"/> an image a running QEMU writes is read anyway (qemu-img check -U), never repaired.
    /// </summary>
    public static ImageCheckResult Check(string path, ImageRepairMode repair, bool forceShare, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!Enum.IsDefined(repair))
        {
            throw ImageErrors.Argument(ImageCheckErrorIds.InvalidRepairMode, $"Unknown repair mode '{repair}'.", path);
        }

        string fullPath = Path.GetFullPath(path);
        if (forceShare && repair != ImageRepairMode.None)
        {
            throw ImageErrors.Argument(ImageCheckErrorIds.InvalidRepairMode, "An image read while in use (-ForceShare) is never repaired.", path);
        }

        if (repair == ImageRepairMode.None)
        {
            if (!forceShare)
            {
                ImageLock.EnsureNotInUse(fullPath, forWrite: false);
            }

            return CheckOpen(fullPath, FileAccess.Read, repair, progress, cancellationToken);
        }

        using (ImageLock.AcquireForWrite(fullPath))
        {
            return CheckOpen(fullPath, FileAccess.ReadWrite, repair, progress, cancellationToken);
        }
    }

    private static ImageCheckResult CheckOpen(string path, FileAccess access, ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, access, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw ImageErrors.FromIo(path, e);
        }

        using (handle)
        {
            ImageProbe probe = ImageInspector.ReadProbe(handle, path);
            IImageFormatReader reader = ImageFormatRegistry.Detect(probe);
            try
            {
                return ImageFormatRegistry.Driver(reader.Format).Check(handle, probe, repair, progress, cancellationToken);
            }
            catch (KvmStorageException)
            {
                throw;
            }
            catch (OperationCanceledException)
            {
                throw;
            }
            catch (IOException e) when (access == FileAccess.ReadWrite)
            {
                throw new KvmStorageException(ErrorKind.WriteError, ImageErrorIds.ImageWriteFailed, $"Repairing '{path}' failed: {e.Message}", path, e);
            }
            catch (Exception e) when (e is IOException or ArgumentException or OverflowException or InvalidOperationException or IndexOutOfRangeException or OutOfMemoryException)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, $"the {reader.Format.ToQemuName()} metadata is malformed ({e.Message}).");
            }
        }
    }
}

/// <summary>Error ids of checks, comparisons and optimisation of images.</summary>
public static class ImageCheckErrorIds
{
    public const string InvalidRepairMode = "InvalidRepairMode";
    public const string RepairNotSupported = "ImageRepairNotSupported";
    public const string CheckNotSupported = "ImageCheckNotSupported";
}
