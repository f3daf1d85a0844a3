using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using static KvmStorage.Core.Images.ForeignImageFile;

namespace KvmStorage.Core.Images.Qcow1;

/// <summary>The original QEMU copy-on-write format, version 1 (big-endian header; qemu block/qcow.c).</summary>
public sealed class Qcow1Reader : IImageFormatReader
{
    private const uint Magic = 0x514649FB; // "QFI\xfb"
    private const int HeaderLength = 48;
    private const uint CryptAes = 1;

    public ImageFormat Format => ImageFormat.Qcow;

    /// <summary>Shares qcow2's magic, so only version 1 is claimed.</summary>
    public int Priority => 20;

    public bool Probe(ImageProbe probe)
    {
        ArgumentNullException.ThrowIfNull(probe);
        ReadOnlySpan<byte> h = probe.Head;
        return h.Length >= 8 && BinaryPrimitives.ReadUInt32BigEndian(h) == Magic && BinaryPrimitives.ReadUInt32BigEndian(h[4..]) == 1;
    }

    public ImageInfo ReadInfo(SafeFileHandle handle, ImageProbe probe, ulong actualSize)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(probe);
        string path = Path.GetFullPath(probe.Path);
        ulong length = probe.FileLength;
        ReadOnlySpan<byte> h = ReadExactly(handle, path, length, 0, HeaderLength, "qcow header");
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(h);
        uint version = BinaryPrimitives.ReadUInt32BigEndian(h[4..]);
        ulong backingOffset = BinaryPrimitives.ReadUInt64BigEndian(h[8..]);
        uint backingSize = BinaryPrimitives.ReadUInt32BigEndian(h[16..]);
        ulong size = BinaryPrimitives.ReadUInt64BigEndian(h[24..]);
        byte clusterBits = h[32];
        byte l2Bits = h[33];
        uint cryptMethod = BinaryPrimitives.ReadUInt32BigEndian(h[36..]);
        ulong l1Offset = BinaryPrimitives.ReadUInt64BigEndian(h[40..]);

        string? problem =
            magic != Magic ? "bad magic" :
            version != 1 ? $"unsupported qcow version {version}" :
            size <= 1 ? "image size is too small (must be at least 2 bytes)" :
            clusterBits is < 9 or > 16 ? "cluster size must be between 512 and 64k" :
            l2Bits is < 6 or > 13 ? "L2 table size must be between 512 and 64k" :
            cryptMethod > CryptAes ? "invalid encryption method in qcow header" :
            null;
        if (problem is null)
        {
            int shift = clusterBits + l2Bits;
            if (size > ulong.MaxValue - (1UL << shift))
            {
                problem = "image too large";
            }
            else
            {
                ulong l1Size = (size + (1UL << shift) - 1) >> shift;
                if (l1Size > int.MaxValue / sizeof(ulong))
                {
                    problem = "image too large";
                }
                else if (l1Offset > length || l1Size * 8 > length - l1Offset)
                {
                    problem = "the L1 table lies beyond the end of the file";
                }
            }
        }

        if (problem is not null)
        {
            throw Invalid(ForeignFormatErrorIds.QcowHeaderInvalid, path, problem + ".");
        }

        string? backing = null;
        if (backingOffset != 0)
        {
            if (backingSize > 1023)
            {
                throw Invalid(ForeignFormatErrorIds.QcowBackingFileInvalid, path, "backing file name too long.");
            }

            backing = CString(ReadExactly(handle, path, length, backingOffset, (int)backingSize, "qcow backing file name"));
        }

        return new ImageInfo
        {
            Path = path,
            ImageFormat = ImageFormat.Qcow,
            // qemu counts whole sectors of the header's size.
            VirtualSize = size / 512 * 512,
            ActualSize = actualSize,
            FileLength = length,
            ClusterSize = 1u << clusterBits,
            BackingFile = string.IsNullOrEmpty(backing) ? null : backing,
            FullBackingFile = string.IsNullOrEmpty(backing) ? null : ResolveNextTo(path, backing),
            Encryption = cryptMethod == CryptAes ? "aes" : null,
        };
    }
}
