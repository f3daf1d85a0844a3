using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vpc;

/// <summary>
/// Creates an empty VHD (<c>qemu-img create -f vpc</c>): dynamic by default, fixed with <see cref="ImageCreateOptions.Fixed"/>
/// (the data area then a hole), the size rounded to a CHS geometry or, forced, to whole MiB. See <see cref="VpcLayout"/>.
/// </summary>
public sealed class VpcWriter : IImageFormatWriter
{
    public ImageFormat Format => ImageFormat.Vpc;

    public bool TakesFixed => true;

    public bool TakesForceSize => true;

    public void Create(SafeFileHandle handle, string path, ImageCreateOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(options);
        VpcLayout layout = Validate(path, options);
        cancellationToken.ThrowIfCancellationRequested();
        FileSystemLimits.SetLength(handle, layout.EmptyLength, path);
        if (layout.Fixed)
        {
            RandomAccess.Write(handle, layout.Footer(Guid.NewGuid()), (long)layout.VirtualSize);
        }
        else
        {
            layout.WriteDynamicMetadata(handle, [], layout.FirstBlockOffset);
        }

        progress?.Report(new ImageProgress(1, 1));
    }

    internal static VpcLayout Validate(string path, ImageCreateOptions options)
    {
        if (options.BackingFile is not null)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "vpc images cannot have a backing file (differencing VHDs are not written).", path);
        }

        if (options.Preallocation != Preallocation.Off)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "vpc images are not preallocated; a fixed image (-Fixed) holds its whole data area.", path);
        }

        if (options.ClusterSize is { } cs && cs != VpcLayout.BlockSize)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, $"vpc images have 2 MiB blocks; the block size cannot be {cs}.", path);
        }

        ulong size = options.VirtualSize ?? throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, "The virtual size is missing.", path);
        return VpcLayout.For(size, options.Fixed, options.ForceSize, path);
    }
}
