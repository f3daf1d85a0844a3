using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using KvmStorage.Core.Images.Raw;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>Creates qcow2 images laid out like <c>qemu-img create</c> (block/qcow2.c, <c>qcow2_co_create</c>).</summary>
public sealed class Qcow2ImageWriter : IImageFormatWriter
{
    private const int ChunkBytes = 4 * 1024 * 1024;

    private static readonly (byte Type, byte Bit, string Name)[] FeatureNames =
    [
        (0, 0, "dirty bit"),
        (0, 1, "corrupt bit"),
        (0, 2, "external data file"),
        (0, 3, "compression type"),
        (0, 4, "extended L2 entries"),
        (1, 0, "lazy refcounts"),
        (2, 0, "bitmaps"),
        (2, 1, "raw external data"),
    ];

    public ImageFormat Format => ImageFormat.Qcow2;

    public void Create(SafeFileHandle handle, string path, ImageCreateOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(options);
        int version = ParseCompat(options.Compat);
        uint clusterSize = options.ClusterSize ?? 65536;
        if (clusterSize < 512 || clusterSize > 2 * 1024 * 1024 || !BitOperations.IsPow2(clusterSize))
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, $"The cluster size {clusterSize} must be a power of two from 512 to 2 MiB.", path);
        }

        int refcountBits = options.RefcountBits;
        if (refcountBits < 1 || refcountBits > 64 || !BitOperations.IsPow2(refcountBits))
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, $"refcount bits {refcountBits} must be a power of two from 1 to 64.", path);
        }

        if (version == 2 && refcountBits != 16)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "compat 0.10 images only support 16-bit refcounts.", path);
        }

        if (version == 2 && options.LazyRefcounts)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "Lazy refcounts need compat 1.1.", path);
        }

        if (options.BackingFile is not null && options.Preallocation != Preallocation.Off)
        {
            // qemu refuses it too: preallocated clusters would hide the backing file's data.
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "A backing file and preallocation cannot be combined.", path);
        }

        ulong size = options.VirtualSize ?? throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, "The virtual size is missing.", path);
        int clusterBits = BitOperations.Log2(clusterSize);
        bool mapAll = options.Preallocation != Preallocation.Off;
        byte[]? luksArea = null;
        if (options.Encryption is { } encryption)
        {
            (_, luksArea, Luks.XtsAes cipher) = Luks.LuksKeys.Create(encryption.Luks, encryption.Passphrase, path);
            cipher.Dispose();
        }

        Qcow2Layout layout = Qcow2Layout.Compute(size, clusterBits, refcountBits, mapAll, path, (ulong)(luksArea?.Length ?? 0));
        byte[] header = BuildHeader(layout, size, version, options, path);

        cancellationToken.ThrowIfCancellationRequested();
        ulong dataBytes = layout.DataClusters * clusterSize;
        switch (options.Preallocation)
        {
            case Preallocation.Metadata:
                RandomAccess.SetLength(handle, (long)(layout.DataOffset + dataBytes));
                break;
            case Preallocation.Falloc:
                RawImageWriter.Fallocate(handle, layout.DataOffset, dataBytes, path);
                break;
            case Preallocation.Full:
                RawImageWriter.WriteZeros(handle, layout.DataOffset, dataBytes, progress, cancellationToken);
                break;
        }

        if (luksArea is not null)
        {
            // qemu zero-fills the area's clusters, then writes the header and key material into them.
            WriteLuksArea(handle, layout, luksArea);
        }

        // Preallocated clusters of an encrypted image hold no ciphertext: flagged zero, they read as zeros, not noise.
        bool zeroFlag = version >= 3 && (options.Preallocation == Preallocation.Metadata || luksArea is not null);
        WriteL2Tables(handle, layout, zeroFlag, cancellationToken);
        WriteL1Table(handle, layout);
        WriteRefcounts(handle, layout);
        ImageIo.Write(handle, header, 0);
        progress?.Report(new ImageProgress(dataBytes, dataBytes));
    }

    /// <summary>Writes a LUKS header area into its clusters, the rest of its last cluster zeros.</summary>
    internal static void WriteLuksArea(SafeFileHandle handle, Qcow2Layout layout, byte[] area)
    {
        ImageIo.Write(handle, area, layout.CryptoOffset);
        ulong end = layout.CryptoOffset + (layout.CryptoClusters * layout.ClusterSize);
        if ((ulong)RandomAccess.GetLength(handle) < end)
        {
            RandomAccess.SetLength(handle, (long)end);
        }
    }

    internal static int ParseCompat(string? compat) => compat switch
    {
        "1.1" or "v3" or null => 3,
        "0.10" or "v2" => 2,
        _ => throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, $"Unknown compat level '{compat}' (use 1.1 or 0.10)."),
    };

    internal static byte[] BuildHeader(Qcow2Layout layout, ulong size, int version, ImageCreateOptions options, string path)
    {
        byte[] cluster = new byte[layout.ClusterSize];
        Span<byte> h = cluster;
        BinaryPrimitives.WriteUInt32BigEndian(h, Qcow2Header.Magic);
        BinaryPrimitives.WriteUInt32BigEndian(h[4..], (uint)version);
        BinaryPrimitives.WriteUInt32BigEndian(h[20..], (uint)layout.ClusterBits);
        BinaryPrimitives.WriteUInt64BigEndian(h[24..], size);
        BinaryPrimitives.WriteUInt32BigEndian(h[36..], (uint)layout.L1Size);
        BinaryPrimitives.WriteUInt64BigEndian(h[40..], layout.L1Size == 0 ? 0 : layout.L1Offset);
        BinaryPrimitives.WriteUInt64BigEndian(h[48..], layout.RefcountTableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(h[56..], (uint)layout.RefcountTableClusters);
        if (layout.CryptoLength > 0)
        {
            BinaryPrimitives.WriteUInt32BigEndian(h[32..], 2); // crypt_method: LUKS
        }

        int offset = Qcow2Header.V2HeaderLength;
        if (version >= 3)
        {
            BinaryPrimitives.WriteUInt64BigEndian(h[80..], options.LazyRefcounts ? Qcow2Header.CompatLazyRefcounts : 0);
            BinaryPrimitives.WriteUInt32BigEndian(h[96..], (uint)BitOperations.Log2((uint)layout.RefcountBits));
            BinaryPrimitives.WriteUInt32BigEndian(h[100..], Qcow2Header.V3HeaderLength);
            offset = Qcow2Header.V3HeaderLength;
        }

        byte[]? backing = options.BackingFile is null ? null : Encoding.UTF8.GetBytes(options.BackingFile);
        if (backing is not null && options.BackingFormat is { } backingFormat)
        {
            offset = AddExtension(cluster, offset, Qcow2Header.ExtBackingFormat, Encoding.ASCII.GetBytes(backingFormat.ToQemuName()), path);
        }

        if (layout.CryptoLength > 0)
        {
            byte[] pointer = new byte[16];
            BinaryPrimitives.WriteUInt64BigEndian(pointer, layout.CryptoOffset);
            BinaryPrimitives.WriteUInt64BigEndian(pointer.AsSpan(8), layout.CryptoLength);
            offset = AddExtension(cluster, offset, Qcow2Header.ExtCryptoHeader, pointer, path);
        }

        // Observed qemu 7.2 behaviour: the feature-name table is only written with clusters of 8 KiB or more.
        if (version >= 3 && layout.ClusterSize >= 8192)
        {
            offset = AddExtension(cluster, offset, Qcow2Header.ExtFeatureTable, FeatureTable(), path);
        }

        // End-of-extensions marker: 8 zero bytes, already zero.
        offset += 8;
        if (backing is not null)
        {
            if (backing.Length == 0 || backing.Length > Qcow2Header.MaxBackingNameLength || offset + backing.Length > cluster.Length)
            {
                throw ImageErrors.Argument(ImageErrorIds.InvalidBackingName, $"The backing file name must be 1 to {Qcow2Header.MaxBackingNameLength} bytes and fit in the first cluster.", path);
            }

            backing.CopyTo(cluster, offset);
            BinaryPrimitives.WriteUInt64BigEndian(h[8..], (ulong)offset);
            BinaryPrimitives.WriteUInt32BigEndian(h[16..], (uint)backing.Length);
        }

        return cluster;
    }

    /// <summary>The feature-name table extension qemu writes into version 3 headers (qcow2.rst "Feature name table").</summary>
    internal static byte[] FeatureTable()
    {
        byte[] table = new byte[FeatureNames.Length * 48];
        for (int i = 0; i < FeatureNames.Length; i++)
        {
            table[i * 48] = FeatureNames[i].Type;
            table[(i * 48) + 1] = FeatureNames[i].Bit;
            Encoding.ASCII.GetBytes(FeatureNames[i].Name, table.AsSpan((i * 48) + 2, 46));
        }

        return table;
    }

    private static int AddExtension(byte[] cluster, int offset, uint type, byte[] data, string path)
    {
        int padded = (data.Length + 7) & ~7;
        if (offset + 8 + padded + 8 > cluster.Length)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidCreateOptions, "The header extensions do not fit in the first cluster.", path);
        }

        BinaryPrimitives.WriteUInt32BigEndian(cluster.AsSpan(offset), type);
        BinaryPrimitives.WriteUInt32BigEndian(cluster.AsSpan(offset + 4), (uint)data.Length);
        data.CopyTo(cluster, offset + 8);
        return offset + 8 + padded;
    }

    private static void WriteL2Tables(SafeFileHandle handle, Qcow2Layout layout, bool zeroFlag, CancellationToken cancellationToken)
    {
        if (layout.L2Tables == 0)
        {
            return;
        }

        ulong cs = layout.ClusterSize;
        ulong entriesPerTable = cs / 8;
        ulong tablesPerChunk = Math.Max(1, (ulong)ChunkBytes / cs);
        byte[] buffer = new byte[(int)(Math.Min(tablesPerChunk, layout.L2Tables) * cs)];
        ulong guestCluster = 0;
        for (ulong table = 0; table < layout.L2Tables; table += tablesPerChunk)
        {
            cancellationToken.ThrowIfCancellationRequested();
            ulong count = Math.Min(tablesPerChunk, layout.L2Tables - table);
            Array.Clear(buffer);
            for (ulong i = 0; i < count * entriesPerTable && guestCluster < layout.DataClusters; i++, guestCluster++)
            {
                ulong entry = Qcow2Entries.Owned(layout.DataOffset + (guestCluster * cs)) | (zeroFlag ? Qcow2Entries.ZeroFlag : 0);
                BinaryPrimitives.WriteUInt64BigEndian(buffer.AsSpan((int)(i * 8)), entry);
            }

            ImageIo.Write(handle, buffer.AsSpan(0, (int)(count * cs)), layout.L2Offset + (table * cs));
        }
    }

    private static void WriteL1Table(SafeFileHandle handle, Qcow2Layout layout)
    {
        if (layout.L1Size == 0)
        {
            return;
        }

        // qemu-img create writes the L1 entries only, not the rest of their cluster: the file ends right after them.
        byte[] l1 = new byte[layout.L1Size * 8];
        for (ulong i = 0; i < layout.L2Tables; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(l1.AsSpan((int)(i * 8)), Qcow2Entries.Owned(layout.L2Offset + (i * layout.ClusterSize)));
        }

        ImageIo.Write(handle, l1, layout.L1Offset);
    }

    private static void WriteRefcounts(SafeFileHandle handle, Qcow2Layout layout)
    {
        ulong cs = layout.ClusterSize;
        ulong perBlock = Qcow2Entries.RefcountsPerBlock(layout.ClusterSize, layout.RefcountBits);
        ulong used = layout.L1Size == 0 ? 1 + layout.RefcountTableClusters + layout.RefcountBlocks + layout.CryptoClusters : layout.TotalClusters;
        byte[] table = new byte[layout.RefcountTableClusters * cs];
        byte[] block = new byte[cs];
        for (ulong b = 0; b < layout.RefcountBlocks; b++)
        {
            Array.Clear(block);
            ulong first = b * perBlock;
            ulong last = Math.Min(used, first + perBlock);
            for (ulong c = first; c < last; c++)
            {
                Qcow2Entries.WriteRefcount(block, c - first, layout.RefcountBits, 1);
            }

            ulong blockOffset = layout.RefcountBlocksOffset + (b * cs);
            ImageIo.Write(handle, block, blockOffset);
            BinaryPrimitives.WriteUInt64BigEndian(table.AsSpan((int)(b * 8)), blockOffset);
        }

        ImageIo.Write(handle, table, layout.RefcountTableOffset);
    }
}
