using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images;

/// <summary>Changes an image's virtual size in place, like <c>qemu-img resize</c>, holding QEMU-compatible write locks.</summary>
public static class ImageResizer
{
    public static ImageInfo Resize(string path, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(options);
        string fullPath = Path.GetFullPath(path);
        if (newSize > long.MaxValue)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, $"The size {newSize} is too large.", fullPath);
        }

        using (ImageLock.AcquireForWrite(fullPath))
        {
            SafeFileHandle handle;
            try
            {
                handle = File.OpenHandle(fullPath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw ImageErrors.FromIo(fullPath, e);
            }

            using (handle)
            {
                try
                {
                    ImageFormat format = ImageFormatRegistry.Detect(ImageInspector.ReadProbe(handle, fullPath)).Format;
                    ImageFormatRegistry.Driver(format).Resize(handle, fullPath, newSize, options, progress, cancellationToken);
                }
                catch (IOException e) when (FileSystemLimits.IsTooLarge(e))
                {
                    throw FileSystemLimits.TooLarge(fullPath, newSize, e);
                }
                catch (IOException e)
                {
                    throw new KvmStorageException(ErrorKind.WriteError, ImageErrorIds.ImageWriteFailed, $"Resizing '{fullPath}' failed: {e.Message}", fullPath, e);
                }
            }
        }

        return ImageInspector.Inspect(fullPath, new ImageInspectOptions { ForceShare = true, AllowMissingBacking = true });
    }
}
