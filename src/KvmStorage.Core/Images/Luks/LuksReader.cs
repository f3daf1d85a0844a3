using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using static KvmStorage.Core.Images.ForeignImageFile;

namespace KvmStorage.Core.Images.Luks;

/// <summary>
/// LUKS version 1 containers (big-endian header; qemu crypto/block-luks.c). The guest sees the payload,
/// which starts at payload-offset sectors. LUKS2 is left to the raw fallback, as qemu 7.2 does.
/// </summary>
public sealed class LuksReader : IImageFormatReader
{
    private const int HeaderLength = 592;
    private const int PayloadOffsetField = 104;
    private static readonly byte[] Magic = [0x4C, 0x55, 0x4B, 0x53, 0xBA, 0xBE];

    public ImageFormat Format => ImageFormat.Luks;

    public int Priority => 20;

    public bool Probe(ImageProbe probe)
    {
        ArgumentNullException.ThrowIfNull(probe);
        ReadOnlySpan<byte> h = probe.Head;
        return h.Length >= 8 && h.StartsWith(Magic) && BinaryPrimitives.ReadUInt16BigEndian(h[6..]) == 1;
    }

    public ImageInfo ReadInfo(SafeFileHandle handle, ImageProbe probe, ulong actualSize)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(probe);
        string path = Path.GetFullPath(probe.Path);
        ulong length = probe.FileLength;
        ReadOnlySpan<byte> h = ReadExactly(handle, path, length, 0, HeaderLength, "LUKS header");
        if (!h.StartsWith(Magic) || BinaryPrimitives.ReadUInt16BigEndian(h[6..]) != 1)
        {
            throw Invalid(ForeignFormatErrorIds.LuksHeaderInvalid, path, "not a LUKS version 1 header.");
        }

        // cipher name, cipher mode and hash spec are 32-byte C strings.
        for (int field = 8; field < PayloadOffsetField; field += 32)
        {
            if (!h.Slice(field, 32).Contains((byte)0))
            {
                throw Invalid(ForeignFormatErrorIds.LuksHeaderInvalid, path, "a LUKS header string is not NUL-terminated.");
            }
        }

        ulong payload = (ulong)BinaryPrimitives.ReadUInt32BigEndian(h[PayloadOffsetField..]) * 512;
        if (payload < HeaderLength || payload > length)
        {
            throw Invalid(ForeignFormatErrorIds.LuksHeaderInvalid, path, $"payload offset {payload} is outside the file ({length} bytes).");
        }

        return new ImageInfo
        {
            DiskType = DiskType.Fixed,
            Path = path,
            ImageFormat = ImageFormat.Luks,
            VirtualSize = length - payload,
            ActualSize = actualSize,
            FileLength = length,
            Encryption = "luks",
        };
    }
}
