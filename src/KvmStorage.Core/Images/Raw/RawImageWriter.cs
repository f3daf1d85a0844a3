using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Raw;

/// <summary>Creates raw images: a sparse file, a posix_fallocate'd file, or a file of written zeros.</summary>
public sealed class RawImageWriter : IImageFormatWriter
{
    private const int ZeroChunk = 1024 * 1024;

    public ImageFormat Format => ImageFormat.Raw;

    public void Create(SafeFileHandle handle, string path, ImageCreateOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(options);
        if (options.BackingFile is not null)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "Raw images cannot have a backing file.", path);
        }

        ulong size = options.VirtualSize ?? throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, "The virtual size is missing.", path);
        Allocate(handle, 0, size, options.Preallocation, path, progress, cancellationToken);
    }

    /// <summary>Extends (or creates) the byte range [<paramref name="from"/>, <paramref name="to"/>) of a raw file.</summary>
    internal static void Allocate(SafeFileHandle handle, ulong from, ulong to, Preallocation mode, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        switch (mode)
        {
            case Preallocation.Off:
                FileSystemLimits.SetLength(handle, to, path);
                break;
            case Preallocation.Falloc:
                Fallocate(handle, from, to - from, path);
                break;
            case Preallocation.Full:
                WriteZeros(handle, from, to - from, progress, cancellationToken);
                break;
            default:
                throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, $"Raw images do not support preallocation '{mode}'.", path);
        }
    }

    internal static void Fallocate(SafeFileHandle handle, ulong offset, ulong length, string path)
    {
        if (length == 0)
        {
            return;
        }

        int error = NativeMethods.posix_fallocate((int)handle.DangerousGetHandle(), (long)offset, (long)length);
        if (error == 27)
        {
            // EFBIG: past the largest file the file system holds.
            throw FileSystemLimits.TooLarge(path, offset + length, null);
        }

        if (error != 0)
        {
            throw new KvmStorageException(
                error == 28 ? ErrorKind.ResourceUnavailable : ErrorKind.WriteError,
                ImageErrorIds.ImageWriteFailed,
                $"posix_fallocate of {length} bytes on '{path}' failed: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(error)}",
                path);
        }
    }

    internal static void WriteZeros(SafeFileHandle handle, ulong offset, ulong length, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        byte[] zeros = new byte[(int)Math.Min((ulong)ZeroChunk, Math.Max(length, 1))];
        ulong done = 0;
        while (done < length)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int n = (int)Math.Min((ulong)zeros.Length, length - done);
            RandomAccess.Write(handle, zeros.AsSpan(0, n), (long)(offset + done));
            done += (ulong)n;
            progress?.Report(new ImageProgress(done, length));
        }
    }
}
