using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images;

// Stand-ins for declarations owned by the qcow2/registry branch; this file is deleted at merge time.

public static partial class ImageFormatRegistry
{
    static partial void AddForeignFormats(List<IImageFormatReader> readers);

    static partial void AddForeignWriters(List<IImageFormatWriter> writers);
}

public interface IImageFormatWriter
{
    ImageFormat Format { get; }

    void Create(SafeFileHandle handle, string path, ImageCreateOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken);
}

public sealed class ImageCreateOptions
{
    public ImageFormat Format { get; init; }

    public ulong? VirtualSize { get; init; }

    public UnixFileMode Mode { get; init; } = UnixFileMode.UserRead | UnixFileMode.UserWrite;
}

public readonly record struct ImageProgress(ulong BytesDone, ulong BytesTotal);
