using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Raw;

/// <summary>The fallback: any file no other reader recognises is a raw image.</summary>
public sealed class RawReader : IImageFormatReader
{
    public ImageFormat Format => ImageFormat.Raw;

    public int Priority => int.MaxValue;

    public bool Probe(ImageProbe probe) => true;

    public ImageInfo ReadInfo(SafeFileHandle handle, ImageProbe probe, ulong actualSize)
    {
        ArgumentNullException.ThrowIfNull(probe);
        return new ImageInfo
        {
            DiskType = DiskType.Fixed,
            Path = probe.Path,
            ImageFormat = ImageFormat.Raw,

            // qemu counts whole sectors: a partial last sector still adds 512 bytes (bdrv_nb_sectors).
            VirtualSize = RoundUpToSector(probe.FileLength),
            ActualSize = actualSize,
            FileLength = probe.FileLength,
        };
    }

    internal static ulong RoundUpToSector(ulong length) => length > ulong.MaxValue - 511 ? length & ~511UL : (length + 511) & ~511UL;
}
