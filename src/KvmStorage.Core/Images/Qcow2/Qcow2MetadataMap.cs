using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>The kinds of qcow2 metadata a write is checked against (qemu's <c>QCOW2_OL_*</c>, its default "cached" set).</summary>
[Flags]
internal enum Qcow2MetadataKind
{
    None = 0,
    Header = 1,
    ActiveL1 = 2,
    ActiveL2 = 4,
    RefcountTable = 8,
    RefcountBlock = 16,
    SnapshotTable = 32,
    InactiveL1 = 64,
}

/// <summary>
/// Where an open qcow2 image keeps its metadata, cluster by cluster, so that every write the engine makes can be
/// checked first, as qemu's <c>qcow2_check_metadata_overlap</c> does: a write that would land on metadata other than
/// what it means to write is refused, nothing is written, and the image is marked corrupt.
/// </summary>
/// <remarks>
/// Built once per open image from tables the writers read anyway (the active L1, the refcount table, the snapshot
/// table and the snapshot L1 offsets; no L2 table is read), then kept current as metadata is allocated and moved.
/// Inactive L2 tables are not tracked, as in qemu's default mode: reading every snapshot's L1 to find them would
/// cost more than the check is worth. Freed metadata may stay in the map until the image is closed: the allocator
/// never hands out a cluster below <see cref="RefcountEditor.FreeStart"/>, so a stale entry cannot refuse a sound write.
/// </remarks>
internal sealed class Qcow2MetadataMap
{
    private readonly Dictionary<ulong, Qcow2MetadataKind> clusters = [];
    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly ulong clusterSize;
    private readonly int version;

    private Qcow2MetadataMap(SafeFileHandle handle, string path, Qcow2Header header)
    {
        this.handle = handle;
        this.path = path;
        clusterSize = header.ClusterSize;
        version = header.Version;
    }

    /// <summary>Metadata clusters known (for tests and diagnostics).</summary>
    public int Count => clusters.Count;

    /// <summary>The map of an image whose refcount table (entries, offsets only) has been read already.</summary>
    // Loops over every entry or unit: optimised on first use (see Qcow2Checker.Analysis.CheckL2).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static Qcow2MetadataMap Build(SafeFileHandle handle, string path, Qcow2Header header, IReadOnlyList<ulong> refcountTable)
    {
        var map = new Qcow2MetadataMap(handle, path, header);
        map.Add(Qcow2MetadataKind.Header, 0, header.ClusterSize);
        map.Add(Qcow2MetadataKind.RefcountTable, header.RefcountTableOffset, (ulong)header.RefcountTableClusters * header.ClusterSize);
        foreach (ulong block in refcountTable)
        {
            if (block != 0)
            {
                map.Add(Qcow2MetadataKind.RefcountBlock, block, header.ClusterSize);
            }
        }

        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        if (header.L1Size > 0 && header.L1TableOffset != 0 && header.L1TableOffset < fileLength)
        {
            ulong l1Bytes = (ulong)header.L1Size * 8;
            map.Add(Qcow2MetadataKind.ActiveL1, header.L1TableOffset, l1Bytes);
            byte[] l1 = ImageIo.ReadBytes(handle, header.L1TableOffset, (int)Math.Min(l1Bytes, fileLength - header.L1TableOffset), path);
            for (int i = 0; i + 8 <= l1.Length; i += 8)
            {
                ulong l2 = Qcow2Entries.HostOffset(BinaryPrimitives.ReadUInt64BigEndian(l1.AsSpan(i)));
                if (l2 != 0)
                {
                    map.Add(Qcow2MetadataKind.ActiveL2, l2, header.ClusterSize);
                }
            }
        }

        if (header.SnapshotCount > 0 && TryReadSnapshots(handle, header, fileLength, path) is { } entries)
        {
            map.Add(Qcow2MetadataKind.SnapshotTable, header.SnapshotsOffset, Qcow2SnapshotTable.TableLength(entries.Select(e => e.Bytes)));
            foreach (Qcow2SnapshotTable.Entry entry in entries)
            {
                ulong l1Offset = BinaryPrimitives.ReadUInt64BigEndian(entry.Bytes);
                uint l1Size = BinaryPrimitives.ReadUInt32BigEndian(entry.Bytes.AsSpan(8));
                if (l1Offset != 0 && l1Size > 0)
                {
                    map.Add(Qcow2MetadataKind.InactiveL1, l1Offset, (ulong)l1Size * 8);
                }
            }
        }

        return map;
    }

    /// <summary>
    /// A snapshot table that cannot be read is the checker's finding to report (and <c>EnsureSound</c> refuses such
    /// an image first); the map then goes without it rather than making every writer fail to open.
    /// </summary>
    private static List<Qcow2SnapshotTable.Entry>? TryReadSnapshots(SafeFileHandle handle, Qcow2Header header, ulong fileLength, string path)
    {
        try
        {
            return Qcow2SnapshotTable.ReadEntries(handle, header, fileLength, path);
        }
        catch (KvmStorageException)
        {
            return null;
        }
    }

    /// <summary>Records <paramref name="kind"/> over the clusters of [offset, offset + length).</summary>
    public void Add(Qcow2MetadataKind kind, ulong offset, ulong length)
    {
        foreach (ulong c in Clusters(offset, length))
        {
            clusters[c] = clusters.GetValueOrDefault(c) | kind;
        }
    }

    /// <summary>Forgets <paramref name="kind"/> over the clusters of [offset, offset + length) (a table that moved).</summary>
    public void Remove(Qcow2MetadataKind kind, ulong offset, ulong length)
    {
        foreach (ulong c in Clusters(offset, length))
        {
            if (clusters.TryGetValue(c, out Qcow2MetadataKind kinds))
            {
                kinds &= ~kind;
                if (kinds == Qcow2MetadataKind.None)
                {
                    clusters.Remove(c);
                }
                else
                {
                    clusters[c] = kinds;
                }
            }
        }
    }

    /// <summary>The metadata other than <paramref name="ignore"/> that [offset, offset + length) would overlap, and where.</summary>
    public (Qcow2MetadataKind Kind, ulong Cluster) Overlap(ulong offset, ulong length, Qcow2MetadataKind ignore)
    {
        if (length == 0)
        {
            return (Qcow2MetadataKind.None, 0);
        }

        ulong first = offset / clusterSize;
        ulong last = (offset + length - 1) / clusterSize;

        // Large writes (a batch of data clusters) scan the map, small ones look their clusters up.
        if (last - first + 1 > (ulong)clusters.Count)
        {
            foreach ((ulong c, Qcow2MetadataKind kinds) in clusters)
            {
                if (c >= first && c <= last && (kinds & ~ignore) != 0)
                {
                    return (kinds & ~ignore, c);
                }
            }

            return (Qcow2MetadataKind.None, 0);
        }

        for (ulong c = first; c <= last; c++)
        {
            if (clusters.TryGetValue(c, out Qcow2MetadataKind kinds) && (kinds & ~ignore) != 0)
            {
                return (kinds & ~ignore, c);
            }
        }

        return (Qcow2MetadataKind.None, 0);
    }

    /// <summary>
    /// Refuses a write of [offset, offset + length) that would land on metadata other than <paramref name="ignore"/>:
    /// the image is marked corrupt (qcow2 v3 incompatible bit 1, as qemu's <c>qcow2_signal_corruption</c> does) and
    /// <c>ImageMetadataOverlap</c> is thrown. Callers check every range of a step before its first write.
    /// </summary>
    public void EnsureFree(ulong offset, ulong length, Qcow2MetadataKind ignore)
    {
        (Qcow2MetadataKind kind, ulong cluster) = Overlap(offset, length, ignore);
        if (kind == Qcow2MetadataKind.None)
        {
            return;
        }

        bool marked = MarkCorrupt();
        throw new KvmStorageException(
            ErrorKind.InvalidData,
            ImageErrorIds.MetadataOverlap,
            $"'{path}': refused a write of {length} bytes at 0x{offset:x}: it would overwrite the image's {Describe(kind)} (cluster at 0x{cluster * clusterSize:x}). Nothing was written{(marked ? "; the image is marked corrupt, as qemu marks it" : string.Empty)}. Repair it with Test-Volume -Repair All (qemu-img check -r all).",
            path);
    }

    /// <summary>qemu's names for the kinds (its "Preventing invalid write on metadata (overlaps with ...)").</summary>
    public static string Describe(Qcow2MetadataKind kind)
    {
        var names = new List<string>();
        if (kind.HasFlag(Qcow2MetadataKind.Header)) { names.Add("qcow2 header"); }
        if (kind.HasFlag(Qcow2MetadataKind.ActiveL1)) { names.Add("active L1 table"); }
        if (kind.HasFlag(Qcow2MetadataKind.ActiveL2)) { names.Add("active L2 table"); }
        if (kind.HasFlag(Qcow2MetadataKind.RefcountTable)) { names.Add("refcount table"); }
        if (kind.HasFlag(Qcow2MetadataKind.RefcountBlock)) { names.Add("refcount block"); }
        if (kind.HasFlag(Qcow2MetadataKind.SnapshotTable)) { names.Add("snapshot table"); }
        if (kind.HasFlag(Qcow2MetadataKind.InactiveL1)) { names.Add("inactive L1 table"); }
        return string.Join(" and ", names);
    }

    /// <summary>
    /// Sets the corrupt bit with one 8-byte write inside the first sector (atomic), then flushes. qemu sets it only on
    /// v3 images (a v2 header has no feature bits); a failure to set it does not hide the refusal.
    /// </summary>
    private bool MarkCorrupt()
    {
        if (version < 3)
        {
            return false;
        }

        try
        {
            byte[] field = ImageIo.ReadBytes(handle, 72, 8, path);
            ulong features = BinaryPrimitives.ReadUInt64BigEndian(field) | Qcow2Header.IncompatCorrupt;
            BinaryPrimitives.WriteUInt64BigEndian(field, features);
            ImageIo.Write(handle, field, 72);
            PositionalFile.Flush(handle);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or KvmStorageException)
        {
            return false;
        }
    }

    private IEnumerable<ulong> Clusters(ulong offset, ulong length)
    {
        if (length == 0)
        {
            yield break;
        }

        for (ulong c = offset / clusterSize; c <= (offset + length - 1) / clusterSize; c++)
        {
            yield return c;
        }
    }
}
