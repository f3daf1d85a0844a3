using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Qcow2;
using KvmStorage.Core.Images.Raw;
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
                    switch (format)
                    {
                        case ImageFormat.Qcow2:
                            if (options.Preallocation != Preallocation.Off)
                            {
                                FileSystemLimits.RequireFits(fullPath, newSize);
                            }

                            Qcow2Resizer.Resize(handle, fullPath, newSize, options);
                            break;
                        case ImageFormat.Raw:
                            ResizeRaw(handle, fullPath, newSize, options, progress, cancellationToken);
                            break;
                        default:
                            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedFormat, fullPath, $"resizing {format.ToQemuName()} images is not supported.");
                    }
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

    private static void ResizeRaw(SafeFileHandle handle, string path, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ulong length = (ulong)RandomAccess.GetLength(handle);
        if (newSize < length)
        {
            if (!options.AllowShrink)
            {
                throw new KvmStorageException(ErrorKind.InvalidOperation, ImageErrorIds.ShrinkNotAllowed, $"Shrinking '{path}' from {length} to {newSize} bytes must be allowed explicitly.", path);
            }

            RandomAccess.SetLength(handle, (long)newSize);
        }
        else if (newSize > length)
        {
            FileSystemLimits.RequireFits(path, newSize);
            try
            {
                if (options.Preallocation == Preallocation.Full)
                {
                    // The new size first, then the zeros: a crash mid-way leaves the new size with part of the
                    // growth still sparse, never a file whose length is neither the old nor the new size.
                    FileSystemLimits.SetLength(handle, newSize, path);
                    PositionalFile.Flush(handle);
                }

                RawImageWriter.Allocate(handle, length, newSize, options.Preallocation, path, progress, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                // A cancelled grow leaves the original size, as if it had never started.
                RandomAccess.SetLength(handle, (long)length);
                throw;
            }
        }

        PositionalFile.Flush(handle);
    }
}
