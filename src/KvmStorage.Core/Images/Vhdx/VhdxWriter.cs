using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vhdx;

/// <summary>
/// Creates an empty VHDX (<c>qemu-img create -f vhdx</c>): dynamic by default, every block not present; fixed with
/// every block in place (the file still sparse). See <see cref="VhdxLayout"/>.
/// </summary>
public sealed class VhdxWriter : IImageFormatWriter
{
    public ImageFormat Format => ImageFormat.Vhdx;

    public bool TakesFixed => true;

    public void Create(SafeFileHandle handle, string path, ImageCreateOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(options);
        VhdxLayout layout = Validate(path, options);
        cancellationToken.ThrowIfCancellationRequested();
        FileSystemLimits.SetLength(handle, layout.EmptyLength, path);
        layout.WriteMetadata(handle, []);
        progress?.Report(new ImageProgress(1, 1));
    }

    internal static VhdxLayout Validate(string path, ImageCreateOptions options)
    {
        if (options.BackingFile is not null)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "vhdx images cannot have a backing file (differencing VHDX images are not written).", path);
        }

        if (options.Preallocation != Preallocation.Off)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "vhdx images are not preallocated; a fixed image (-Fixed) has every block in place.", path);
        }

        ulong size = options.VirtualSize ?? throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, "The virtual size is missing.", path);
        return VhdxLayout.For(size, options.ClusterSize, options.Fixed, path, message => ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, message, path));
    }
}
