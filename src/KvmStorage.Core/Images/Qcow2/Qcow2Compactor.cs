using System.Buffers.Binary;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>A fresh qcow2 holding the active image only: header, refcounts, L1, L2 tables, then data in guest order.</summary>
internal static class Qcow2Compactor
{
    public static void Write(SafeFileHandle source, SafeFileHandle target, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        Qcow2Header header = Qcow2Checker.ReadSoundHeader(source, path, out byte[] cluster0);
        if (header.SnapshotCount > 0 || header.HasBitmaps)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, "compacting qcow2 images with internal snapshots or persistent bitmaps is not supported.");
        }

        ulong cs = header.ClusterSize;
        int bits = header.ClusterBits;
        ulong entries = header.L2Entries;
        byte[] l1 = header.L1Size == 0 ? [] : ImageIo.ReadBytes(source, header.L1TableOffset, (int)(header.L1Size * 8), path);

        // The new L2 entries by L1 index: data clusters are numbered in guest order and placed later.
        var tables = new SortedDictionary<uint, ulong[]>();
        var dataSources = new List<(ulong Guest, ulong Entry)>();
        byte[] l2 = new byte[cs];
        for (uint i = 0; i < header.L1Size; i++)
        {
            ulong l2Offset = Qcow2Entries.HostOffset(BinaryPrimitives.ReadUInt64BigEndian(l1.AsSpan((int)(i * 8))));
            if (l2Offset == 0)
            {
                continue;
            }

            ImageIo.ReadExactly(source, l2, l2Offset, path);
            ulong[]? table = null;
            for (ulong j = 0; j < entries; j++)
            {
                ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((int)(j * 8)));
                if (entry == 0)
                {
                    continue;
                }

                table ??= new ulong[entries];
                if (!Qcow2Entries.IsCompressed(entry) && Qcow2Entries.IsZero(entry))
                {
                    // Zero clusters stay zero clusters, without their preallocated space.
                    table[j] = Qcow2Entries.ZeroFlag;
                    continue;
                }

                if (!Qcow2Entries.IsCompressed(entry) && Qcow2Entries.HostOffset(entry) == 0)
                {
                    continue;
                }

                table[j] = ulong.MaxValue;
                dataSources.Add((((ulong)i * entries) + j, entry));
            }

            if (table is not null)
            {
                tables[i] = table;
            }
        }

        ulong l1Clusters = Math.Max(1, Qcow2Layout.CeilDiv((ulong)header.L1Size * 8, cs));
        ulong perBlock = Qcow2Entries.RefcountsPerBlock(header.ClusterSize, header.RefcountBits);
        (ulong blocks, ulong tableClusters) = Qcow2Layout.RefcountStructure(1 + l1Clusters + (ulong)tables.Count + (ulong)dataSources.Count, perBlock, cs);

        ulong tableOffset = cs;
        ulong blocksOffset = tableOffset + (tableClusters * cs);
        ulong l1Offset = blocksOffset + (blocks * cs);
        ulong l2Start = l1Offset + (l1Clusters * cs);
        ulong dataStart = l2Start + ((ulong)tables.Count * cs);
        ulong total = 1 + tableClusters + blocks + l1Clusters + (ulong)tables.Count + (ulong)dataSources.Count;

        // Data, in guest order; compressed clusters are read decompressed through the block layer.
        using IBlockReader? reader = dataSources.Any(d => Qcow2Entries.IsCompressed(d.Entry))
            ? BlockReaders.Open(path, new BlockOpenOptions { Format = ImageFormat.Qcow2, ForceShare = true })
            : null;
        byte[] data = new byte[cs];
        ulong next = dataStart;
        var placed = new Dictionary<ulong, ulong>();
        foreach ((ulong guest, ulong entry) in dataSources)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (Qcow2Entries.IsCompressed(entry))
            {
                ulong guestOffset = guest << bits;
                int length = (int)Math.Min(cs, reader!.Size - guestOffset);
                Array.Clear(data);
                reader.Read(guestOffset, data.AsSpan(0, length));
            }
            else
            {
                PositionalFile.ReadZeroPadded(source, data, Qcow2Entries.HostOffset(entry));
            }

            RandomAccess.Write(target, data, (long)next);
            placed[guest] = next;
            next += cs;
            progress?.Report(new ImageProgress(next - dataStart, (ulong)dataSources.Count * cs));
        }

        byte[] l1Out = new byte[l1Clusters * cs];
        ulong l2At = l2Start;
        byte[] l2Out = new byte[cs];
        foreach ((uint index, ulong[] table) in tables)
        {
            for (ulong j = 0; j < entries; j++)
            {
                ulong value = table[j] == ulong.MaxValue ? Qcow2Entries.Owned(placed[((ulong)index * entries) + j]) : table[j];
                BinaryPrimitives.WriteUInt64BigEndian(l2Out.AsSpan((int)(j * 8)), value);
            }

            RandomAccess.Write(target, l2Out, (long)l2At);
            BinaryPrimitives.WriteUInt64BigEndian(l1Out.AsSpan((int)(index * 8)), Qcow2Entries.Owned(l2At));
            l2At += cs;
        }

        RandomAccess.Write(target, l1Out, (long)l1Offset);
        byte[] refTable = new byte[tableClusters * cs];
        byte[] block = new byte[cs];
        for (ulong b = 0; b < blocks; b++)
        {
            Array.Clear(block);
            for (ulong k = 0; k < perBlock && (b * perBlock) + k < total; k++)
            {
                Qcow2Entries.WriteRefcount(block, k, header.RefcountBits, 1);
            }

            RandomAccess.Write(target, block, (long)(blocksOffset + (b * cs)));
            BinaryPrimitives.WriteUInt64BigEndian(refTable.AsSpan((int)(b * 8)), blocksOffset + (b * cs));
        }

        RandomAccess.Write(target, refTable, (long)tableOffset);

        // Cluster 0 as it was (extensions, backing name), with the new table positions and no snapshots.
        BinaryPrimitives.WriteUInt64BigEndian(cluster0.AsSpan(40), l1Offset);
        BinaryPrimitives.WriteUInt64BigEndian(cluster0.AsSpan(48), tableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(cluster0.AsSpan(56), (uint)tableClusters);
        BinaryPrimitives.WriteUInt32BigEndian(cluster0.AsSpan(60), 0);
        BinaryPrimitives.WriteUInt64BigEndian(cluster0.AsSpan(64), 0);
        RandomAccess.Write(target, cluster0, 0);
        RandomAccess.SetLength(target, (long)Math.Max(next, dataStart));
    }
}
