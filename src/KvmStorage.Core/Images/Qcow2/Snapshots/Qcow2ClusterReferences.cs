using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2.Snapshots;

/// <summary>
/// Walks an L1 table (active or a snapshot's) and its L2 tables: which host clusters it references, and the
/// copied flag (qcow2.rst "Cluster mapping") that must say "refcount is exactly 1" in the active tables.
/// </summary>
internal sealed class Qcow2ClusterReferences
{
    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly Qcow2Header header;
    private readonly ulong clusterSize;
    private readonly Qcow2Entries.CompressedDescriptor compressed;

    public Qcow2ClusterReferences(SafeFileHandle handle, string path, Qcow2Header header)
    {
        this.handle = handle;
        this.path = path;
        this.header = header;
        clusterSize = header.ClusterSize;
        compressed = new Qcow2Entries.CompressedDescriptor(header.ClusterBits);
    }

    /// <summary>The image's metadata map, when the owner keeps one: every table write is checked against it first.</summary>
    public Qcow2MetadataMap? Map { get; set; }

    /// <summary>Clusters an L1 table of <paramref name="entries"/> entries occupies.</summary>
    public ulong L1Clusters(ulong entries) => Qcow2Layout.CeilDiv(entries * 8, clusterSize);

    public ulong[] ReadL1(ulong offset, uint entries)
    {
        if (entries == 0)
        {
            return [];
        }

        if ((ulong)entries * 8 > Qcow2Header.MaxL1Bytes)
        {
            throw ImageErrors.Invalid(ImageErrorIds.L1TableTooLarge, path, $"an L1 table of {entries} entries exceeds qemu's 32 MiB limit.");
        }

        ulong length = (ulong)RandomAccess.GetLength(handle);
        if (offset == 0 || offset % clusterSize != 0 || offset > length || (ulong)entries * 8 > length - offset)
        {
            throw ImageErrors.Invalid(ImageErrorIds.TableOutOfBounds, path, $"the L1 table at 0x{offset:x} is misaligned or lies past the end of the file.");
        }

        byte[] raw = ImageIo.ReadBytes(handle, offset, (int)(entries * 8), path);
        ulong[] l1 = new ulong[entries];
        for (int i = 0; i < l1.Length; i++)
        {
            l1[i] = BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
        }

        return l1;
    }

    /// <summary>Writes an L1 table, padded with zero entries to whole clusters when <paramref name="wholeClusters"/>.</summary>
    public void WriteL1(ulong[] l1, ulong offset, bool wholeClusters)
    {
        ulong length = wholeClusters ? L1Clusters((ulong)l1.Length) * clusterSize : (ulong)l1.Length * 8;
        byte[] raw = new byte[length];
        for (int i = 0; i < l1.Length; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(i * 8), l1[i]);
        }

        Map?.EnsureFree(offset, length, Qcow2MetadataKind.ActiveL1 | Qcow2MetadataKind.InactiveL1);
        ImageIo.Write(handle, raw, offset);
    }

    /// <summary>
    /// Adds <paramref name="addend"/> to <paramref name="deltas"/> for every L2 table of <paramref name="l1"/> and every
    /// host cluster those tables map (a compressed cluster counts once for each host cluster its sectors touch),
    /// as qemu's <c>qcow2_update_snapshot_refcount</c> counts them.
    /// </summary>
    // Loops over every entry or unit: optimised on first use (see Qcow2Checker.Analysis.CheckL2).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void AddReferences(ulong[] l1, long addend, Dictionary<ulong, long> deltas)
    {
        byte[] l2 = new byte[clusterSize];
        foreach (ulong l1Entry in l1)
        {
            ulong l2Offset = Qcow2Entries.HostOffset(l1Entry);
            if (l2Offset == 0)
            {
                continue;
            }

            ReadL2(l2Offset, l2);
            Add(deltas, l2Offset / clusterSize, addend);
            for (ulong j = 0; j < header.L2Entries; j++)
            {
                ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((int)(j * (ulong)header.L2EntryBytes)));
                if (Qcow2Entries.IsCompressed(entry))
                {
                    (ulong first, ulong last) = CompressedClusters(entry);
                    for (ulong c = first; c <= last; c++)
                    {
                        Add(deltas, c, addend);
                    }
                }
                else if (DataOffset(entry) is ulong data and not 0)
                {
                    Add(deltas, data / clusterSize, addend);
                }
            }
        }
    }

    /// <summary>
    /// Sets the copied flag of every entry of <paramref name="l1"/> (in memory) and of the L2 tables it references
    /// (on disk, only tables that change) to "refcount is exactly 1", from the current refcounts.
    /// </summary>
    /// <returns>Whether an entry of <paramref name="l1"/> changed.</returns>
    public bool RebuildCopiedBits(ulong[] l1, RefcountEditor refcounts)
    {
        bool l1Changed = false;
        byte[] l2 = new byte[clusterSize];
        for (int i = 0; i < l1.Length; i++)
        {
            ulong l2Offset = Qcow2Entries.HostOffset(l1[i]);
            if (l2Offset == 0)
            {
                continue;
            }

            ulong l1Entry = Qcow2Entries.WithCopied(l1[i], refcounts.Get(l2Offset / clusterSize) == 1);
            l1Changed |= l1Entry != l1[i];
            l1[i] = l1Entry;
            ReadL2(l2Offset, l2);
            bool l2Changed = false;
            for (ulong j = 0; j < header.L2Entries; j++)
            {
                Span<byte> slot = l2.AsSpan((int)(j * (ulong)header.L2EntryBytes), 8);
                ulong entry = BinaryPrimitives.ReadUInt64BigEndian(slot);

                // Compressed clusters never carry the flag; unallocated ones (offset 0) have nothing to count.
                if (Qcow2Entries.IsCompressed(entry) || DataOffset(entry) is not ulong data || data == 0)
                {
                    continue;
                }

                ulong updated = Qcow2Entries.WithCopied(entry, refcounts.Get(data / clusterSize) == 1);
                if (updated != entry)
                {
                    BinaryPrimitives.WriteUInt64BigEndian(slot, updated);
                    l2Changed = true;
                }
            }

            if (l2Changed)
            {
                Map?.EnsureFree(l2Offset, clusterSize, Qcow2MetadataKind.ActiveL2);
                ImageIo.Write(handle, l2, l2Offset);
            }
        }

        return l1Changed;
    }

    private static void Add(Dictionary<ulong, long> deltas, ulong cluster, long addend) =>
        deltas[cluster] = deltas.GetValueOrDefault(cluster) + addend;

    private void ReadL2(ulong offset, byte[] buffer)
    {
        ulong length = (ulong)RandomAccess.GetLength(handle);
        if (offset % clusterSize != 0 || offset > length || clusterSize > length - offset)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, $"the L2 table at 0x{offset:x} is misaligned or lies past the end of the file.");
        }

        ImageIo.ReadExactly(handle, buffer, offset, path);
    }

    /// <summary>The host offset of a standard (uncompressed) L2 entry; misaligned offsets are corruption (qemu marks the image corrupt).</summary>
    private ulong? DataOffset(ulong entry)
    {
        ulong offset = Qcow2Entries.HostOffset(entry);
        if (offset % clusterSize != 0)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, $"an L2 entry points at the unaligned host offset 0x{offset:x}.");
        }

        return offset;
    }

    /// <summary>The first and last host cluster a compressed descriptor's sectors touch.</summary>
    internal (ulong First, ulong Last) CompressedClusters(ulong entry) => compressed.Clusters(entry, clusterSize);
}
