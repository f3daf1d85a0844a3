using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>Detects qcow2 (v2, v3) and reads its header, extensions and snapshot table.</summary>
public sealed class Qcow2Reader : IImageFormatReader
{
    public ImageFormat Format => ImageFormat.Qcow2;

    public int Priority => 100;

    public bool Probe(ImageProbe probe)
    {
        ArgumentNullException.ThrowIfNull(probe);
        return Qcow2Header.HasMagic(probe.Head);
    }

    public ImageInfo ReadInfo(SafeFileHandle handle, ImageProbe probe, ulong actualSize)
    {
        ArgumentNullException.ThrowIfNull(probe);
        Qcow2Header header = ReadHeader(handle, probe.Head, probe.FileLength, probe.Path);
        List<SnapshotInfo> snapshots = Qcow2SnapshotTable.Read(handle, header, probe.FileLength, probe.Path);
        return new ImageInfo
        {
            Path = probe.Path,
            ImageFormat = ImageFormat.Qcow2,

            // qemu keeps the size in 512-byte sectors (qcow2_do_open: total_sectors = size / 512).
            VirtualSize = header.Size & ~511UL,
            ActualSize = actualSize,
            FileLength = probe.FileLength,
            ClusterSize = header.ClusterSize,
            BackingFile = header.BackingFile,
            BackingFormat = header.BackingFormat,
            DirtyFlag = header.Dirty,
            Encryption = header.CryptMethod switch
            {
                1 => "aes",
                2 => "luks",
                _ => null,
            },
            Snapshots = snapshots,
            Qcow2 = new Qcow2Details
            {
                Version = header.Version,
                RefcountBits = header.RefcountBits,
                LazyRefcounts = header.LazyRefcounts,
                Corrupt = header.Corrupt,
                CompressionType = header.CompressionType == CompressionType.Zstd ? "zstd" : "zlib",
                ExtendedL2 = header.ExtendedL2,
                IncompatibleFeatures = header.IncompatibleFeatures,
                CompatibleFeatures = header.CompatibleFeatures,
                AutoclearFeatures = header.AutoclearFeatures,
                DataFile = header.DataFile,
            },
        };
    }

    /// <summary>Parses the header from cluster 0, re-reading it when it extends past the probe's 64 KiB.</summary>
    internal static Qcow2Header ReadHeader(SafeFileHandle handle, byte[] head, ulong fileLength, string path)
    {
        Qcow2Header first = Qcow2Header.Parse(head, fileLength, path);
        ulong cluster0 = Math.Min(first.ClusterSize, fileLength);
        if (cluster0 <= (ulong)head.Length)
        {
            return first;
        }

        // Bounded: at most one cluster, and cluster_bits was checked to be ≤ 21 (2 MiB).
        byte[] whole = ImageIo.ReadBytes(handle, 0, (int)cluster0, path);
        return Qcow2Header.Parse(whole, fileLength, path);
    }
}
