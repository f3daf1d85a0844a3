using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using static KvmStorage.Core.Images.ForeignImageFile;

namespace KvmStorage.Core.Images.Qed;

/// <summary>QEMU Enhanced Disk (little-endian header; qemu block/qed.c and docs/interop/qed_spec).</summary>
public sealed class QedReader : IImageFormatReader
{
    private const int HeaderLength = 64;
    private const ulong FeatureBackingFile = 1;
    private const ulong FeatureNeedCheck = 2;
    private const ulong FeatureBackingFormatNoProbe = 4;
    private const ulong KnownFeatures = FeatureBackingFile | FeatureNeedCheck | FeatureBackingFormatNoProbe;
    private static readonly byte[] Magic = "QED\0"u8.ToArray();

    public ImageFormat Format => ImageFormat.Qed;

    public int Priority => 20;

    public bool Probe(ImageProbe probe)
    {
        ArgumentNullException.ThrowIfNull(probe);
        return probe.Head.Length >= HeaderLength && probe.Head.AsSpan().StartsWith(Magic);
    }

    public ImageInfo ReadInfo(SafeFileHandle handle, ImageProbe probe, ulong actualSize)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(probe);
        string path = Path.GetFullPath(probe.Path);
        ulong length = probe.FileLength;
        ReadOnlySpan<byte> h = ReadExactly(handle, path, length, 0, HeaderLength, "QED header");
        uint clusterSize = BinaryPrimitives.ReadUInt32LittleEndian(h[4..]);
        uint tableSize = BinaryPrimitives.ReadUInt32LittleEndian(h[8..]);
        uint headerSize = BinaryPrimitives.ReadUInt32LittleEndian(h[12..]);
        ulong features = BinaryPrimitives.ReadUInt64LittleEndian(h[16..]);
        ulong l1Offset = BinaryPrimitives.ReadUInt64LittleEndian(h[40..]);
        ulong imageSize = BinaryPrimitives.ReadUInt64LittleEndian(h[48..]);
        uint backingOffset = BinaryPrimitives.ReadUInt32LittleEndian(h[56..]);
        uint backingSize = BinaryPrimitives.ReadUInt32LittleEndian(h[60..]);

        static bool PowerOfTwo(ulong v) => v != 0 && (v & (v - 1)) == 0;
        string? problem =
            !h.StartsWith(Magic) ? "image not in QED format" :
            (features & ~KnownFeatures) != 0 ? $"unsupported QED features 0x{features & ~KnownFeatures:x}" :
            !PowerOfTwo(clusterSize) || clusterSize < 4096 || clusterSize > 64 * 1024 * 1024 ? $"invalid cluster size {clusterSize}" :
            !PowerOfTwo(tableSize) || tableSize > 16 ? $"invalid table size {tableSize}" :
            null;
        if (problem is null)
        {
            // The largest image two table levels can map: entries² × cluster size.
            ulong entries = (ulong)tableSize * clusterSize / sizeof(ulong);
            decimal maxImage = (decimal)entries * entries * clusterSize;
            ulong fileEnd = length / clusterSize * clusterSize;
            ulong tableBytes = (ulong)tableSize * clusterSize;
            if (imageSize % 512 != 0 || imageSize > maxImage)
            {
                problem = $"invalid image size {imageSize}";
            }
            else if (l1Offset % clusterSize != 0 || l1Offset < (ulong)headerSize * clusterSize || l1Offset >= fileEnd || tableBytes > fileEnd - l1Offset)
            {
                problem = $"L1 table offset {l1Offset} is invalid";
            }
            else if (headerSize > uint.MaxValue / clusterSize)
            {
                problem = $"header size {headerSize} clusters is too large";
            }
        }

        if (problem is not null)
        {
            throw Invalid(ForeignFormatErrorIds.QedHeaderInvalid, path, problem + ".");
        }

        string? backing = null;
        string? backingFormat = null;
        if ((features & FeatureBackingFile) != 0)
        {
            if ((ulong)backingOffset + backingSize > (ulong)clusterSize * headerSize || backingSize >= 4096)
            {
                throw Invalid(ForeignFormatErrorIds.QedBackingFileInvalid, path, "the backing file name lies outside the header or is too long.");
            }

            backing = CString(ReadExactly(handle, path, length, backingOffset, (int)backingSize, "QED backing file name"));
            if ((features & FeatureBackingFormatNoProbe) != 0)
            {
                backingFormat = "raw";
            }
        }

        return new ImageInfo
        {
            Path = path,
            ImageFormat = ImageFormat.Qed,
            VirtualSize = imageSize,
            ActualSize = actualSize,
            FileLength = length,
            ClusterSize = clusterSize,
            BackingFile = string.IsNullOrEmpty(backing) ? null : backing,
            FullBackingFile = string.IsNullOrEmpty(backing) ? null : ResolveNextTo(path, backing),
            BackingFormat = string.IsNullOrEmpty(backing) ? null : backingFormat,
            DirtyFlag = (features & FeatureNeedCheck) != 0,
        };
    }
}
