using System.Buffers.Binary;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>Frees the all-zero data clusters of a qcow2 image in place.</summary>
internal static class Qcow2ZeroClusters
{
    /// <summary>
    /// Drops all-zero data clusters of the active qcow2 tables. Only clusters and L2 tables with refcount 1 (copied
    /// flag) change, so snapshots keep their data. The L2 entries are durable before the refcounts drop (at worst a
    /// crash leaks the clusters), and the freed clusters are punched out of the file.
    /// </summary>
    public static ulong Free(SafeFileHandle handle, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        Qcow2Header header = Qcow2Checker.ReadSoundHeader(handle, path, out _);
        ulong cs = header.ClusterSize;

        // With a backing file an unallocated cluster would show the backing data: v3 marks it zero, v2 cannot.
        bool hasBacking = !string.IsNullOrEmpty(header.BackingFile);
        if (hasBacking && header.Version < 3)
        {
            return 0;
        }

        ulong replacement = hasBacking ? Qcow2Entries.ZeroFlag : 0;
        byte[] l1 = header.L1Size == 0 ? [] : ImageIo.ReadBytes(handle, header.L1TableOffset, (int)(header.L1Size * 8), path);
        byte[] l2 = new byte[cs];
        byte[] data = new byte[cs];
        var freed = new List<ulong>();
        for (uint i = 0; i < header.L1Size; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            progress?.Report(new ImageProgress((ulong)i * header.L2Span, header.L1Size * header.L2Span));
            ulong l1Entry = BinaryPrimitives.ReadUInt64BigEndian(l1.AsSpan((int)(i * 8)));
            ulong l2Offset = Qcow2Entries.HostOffset(l1Entry);
            if (l2Offset == 0 || !Qcow2Entries.IsCopied(l1Entry))
            {
                continue;
            }

            Qcow2Resizer.CheckCluster(l2Offset, cs, handle, path);
            ImageIo.ReadExactly(handle, l2, l2Offset, path);
            int before = freed.Count;
            for (int j = 0; j < l2.Length; j += 8)
            {
                ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan(j));
                ulong offset = Qcow2Entries.HostOffset(entry);
                if (Qcow2Entries.IsCompressed(entry) || !Qcow2Entries.IsCopied(entry) || Qcow2Entries.IsZero(entry) || offset == 0)
                {
                    continue;
                }

                PositionalFile.ReadZeroPadded(handle, data, offset);
                if (!data.AsSpan().ContainsAnyExcept((byte)0))
                {
                    BinaryPrimitives.WriteUInt64BigEndian(l2.AsSpan(j), replacement);
                    freed.Add(offset);
                }
            }

            if (freed.Count > before)
            {
                ImageIo.Write(handle, l2, l2Offset);
            }
        }

        if (freed.Count == 0)
        {
            return 0;
        }

        // qcow2.rst "Host cluster management": nothing may point at a cluster whose refcount drops to 0.
        PositionalFile.Flush(handle);
        var refcounts = new RefcountEditor(handle, path, header, (ulong)RandomAccess.GetLength(handle));
        foreach (ulong offset in freed)
        {
            refcounts.Free(offset / cs, 1);
        }

        PositionalFile.Flush(handle);
        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        foreach (ulong offset in freed)
        {
            ImageOptimizer.PunchHole(handle, path, offset, Math.Min(cs, fileLength - Math.Min(fileLength, offset)));
        }

        return (ulong)freed.Count;
    }
}
