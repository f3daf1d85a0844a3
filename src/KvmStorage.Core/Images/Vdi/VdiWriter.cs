using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vdi;

/// <summary>
/// Creates an empty VDI (<c>qemu-img create -f vdi</c>): dynamic by default, every block unallocated; static (VirtualBox's
/// fixed, <c>static=on</c>) with <see cref="ImageCreateOptions.Fixed"/>, every block in place and the file sparse.
/// </summary>
public sealed class VdiWriter : IImageFormatWriter
{
    public ImageFormat Format => ImageFormat.Vdi;

    public bool TakesFixed => true;

    public void Create(SafeFileHandle handle, string path, ImageCreateOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(options);
        VdiLayout layout = Validate(path, options);
        cancellationToken.ThrowIfCancellationRequested();
        FileSystemLimits.SetLength(handle, layout.EmptyLength, path);
        layout.WriteMetadata(handle, []);
        progress?.Report(new ImageProgress(1, 1));
    }

    internal static VdiLayout Validate(string path, ImageCreateOptions options)
    {
        if (options.BackingFile is not null)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "vdi images cannot have a backing file (differencing VDIs are not written).", path);
        }

        if (options.Preallocation != Preallocation.Off)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "vdi images are not preallocated; a static image (-Fixed) maps every block up front.", path);
        }

        if (options.ClusterSize is { } cs && cs != VdiLayout.BlockSize)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, $"vdi images have 1 MiB blocks; the block size cannot be {cs}.", path);
        }

        ulong size = options.VirtualSize ?? throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, "The virtual size is missing.", path);
        return VdiLayout.For(size, options.Fixed, path);
    }
}
