using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using static KvmStorage.Core.Images.ForeignImageFile;

namespace KvmStorage.Core.Images.Parallels;

/// <summary>Parallels disk images (little-endian header; qemu block/parallels.c and docs/interop/parallels.txt).</summary>
public sealed class ParallelsReader : IImageFormatReader
{
    private const int HeaderLength = 64;
    private const uint Version = 2;
    private static readonly byte[] OldMagic = "WithoutFreeSpace"u8.ToArray();
    private static readonly byte[] NewMagic = "WithouFreSpacExt"u8.ToArray();

    public ImageFormat Format => ImageFormat.Parallels;

    public int Priority => 30;

    public bool Probe(ImageProbe probe)
    {
        ArgumentNullException.ThrowIfNull(probe);
        ReadOnlySpan<byte> h = probe.Head;
        return h.Length >= HeaderLength && (h.StartsWith(OldMagic) || h.StartsWith(NewMagic)) && BinaryPrimitives.ReadUInt32LittleEndian(h[16..]) == Version;
    }

    public ImageInfo ReadInfo(SafeFileHandle handle, ImageProbe probe, ulong actualSize)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(probe);
        string path = Path.GetFullPath(probe.Path);
        ulong length = probe.FileLength;
        ReadOnlySpan<byte> h = ReadExactly(handle, path, length, 0, HeaderLength, "Parallels header");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(h[16..]);
        uint tracks = BinaryPrimitives.ReadUInt32LittleEndian(h[28..]);
        uint batEntries = BinaryPrimitives.ReadUInt32LittleEndian(h[32..]);
        ulong sectors = BinaryPrimitives.ReadUInt64LittleEndian(h[36..]);
        bool old = h.StartsWith(OldMagic);
        if (version != Version || !(old || h.StartsWith(NewMagic)))
        {
            throw Invalid(ForeignFormatErrorIds.ParallelsHeaderInvalid, path, "image not in Parallels format.");
        }

        if (old)
        {
            // The old format only has a 32-bit sector count.
            sectors &= 0xffffffff;
        }

        string? problem =
            tracks == 0 ? "zero sectors per track" :
            tracks > int.MaxValue / 513 ? "cluster too big" :
            batEntries > int.MaxValue / sizeof(uint) ? "catalog too large" :
            sectors > long.MaxValue / 512 ? "too many sectors" :
            null;
        if (problem is not null)
        {
            throw Invalid(ForeignFormatErrorIds.ParallelsHeaderInvalid, path, $"invalid image: {problem}.");
        }

        return new ImageInfo
        {
            Path = path,
            ImageFormat = ImageFormat.Parallels,
            VirtualSize = sectors * 512,
            ActualSize = actualSize,
            FileLength = length,
        };
    }
}
