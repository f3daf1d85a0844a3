using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// Allocates clusters at the end of a qcow2 image and keeps its refcount table and blocks in step,
/// creating refcount blocks and a larger refcount table when the new clusters fall outside their range.
/// </summary>
internal sealed class RefcountEditor
{
    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly ulong clusterSize;
    private readonly int bits;
    private readonly ulong perBlock;
    private readonly Dictionary<ulong, byte[]> blocks = [];
    private ulong[] table;
    private ulong tableOffset;
    private ulong tableClusters;

    // Loops over every entry or unit: optimised on first use (see Qcow2Checker.Analysis.CheckL2).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public RefcountEditor(SafeFileHandle handle, string path, Qcow2Header header, ulong fileLength)
    {
        this.handle = handle;
        this.path = path;
        clusterSize = header.ClusterSize;
        bits = header.RefcountBits;
        perBlock = Qcow2Entries.RefcountsPerBlock(header.ClusterSize, bits);
        tableOffset = header.RefcountTableOffset;
        tableClusters = header.RefcountTableClusters;
        byte[] raw = ImageIo.ReadBytes(handle, tableOffset, (int)(tableClusters * clusterSize), path);
        table = new ulong[raw.Length / 8];
        for (int i = 0; i < table.Length; i++)
        {
            table[i] = Qcow2Entries.RefcountBlockOffset(BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8)));
        }

        // Allocate after both the file's end and the last refcounted cluster (qemu's qcow2_get_last_cluster).
        ulong lastUsed = 0;
        for (ulong b = 0; b < (ulong)table.Length; b++)
        {
            if (table[b] == 0)
            {
                continue;
            }

            byte[] block = Block(b);
            for (ulong i = perBlock; i-- > 0;)
            {
                if (Qcow2Entries.ReadRefcount(block, i, bits) != 0)
                {
                    lastUsed = Math.Max(lastUsed, (b * perBlock) + i + 1);
                    break;
                }
            }
        }

        FreeStart = Math.Max(Qcow2Layout.CeilDiv(fileLength, clusterSize), lastUsed);
        Map = Qcow2MetadataMap.Build(handle, path, header, table);
    }

    /// <summary>The image's metadata, which every write of this editor and of the writers sharing it is checked against.</summary>
    public Qcow2MetadataMap Map { get; }

    /// <summary>The first cluster index past everything in use (advanced by each <see cref="Commit"/>).</summary>
    public ulong FreeStart { get; private set; }

    /// <summary>The largest refcount an entry can hold.</summary>
    public ulong MaxRefcount => bits == 64 ? ulong.MaxValue : (1UL << bits) - 1;

    /// <summary>The refcount of one cluster (0 when its refcount block does not exist).</summary>
    public ulong Get(ulong cluster)
    {
        ulong b = cluster / perBlock;
        return b >= (ulong)table.Length || table[b] == 0 ? 0 : Qcow2Entries.ReadRefcount(Block(b), cluster % perBlock, bits);
    }

    /// <summary>
    /// Checks that every change of <paramref name="deltas"/> (cluster index to signed change) keeps its refcount
    /// within 0..<see cref="MaxRefcount"/>, without writing anything.
    /// </summary>
    public void Validate(IReadOnlyDictionary<ulong, long> deltas)
    {
        foreach ((ulong cluster, long delta) in deltas)
        {
            ulong value = Get(cluster);
            if (delta < 0 && (ulong)(-delta) > value)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, $"cluster {cluster} has refcount {value} but {-delta} more references; repair the image with 'qemu-img check -r all'.");
            }

            if (delta > 0 && value == 0)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, $"cluster {cluster} is referenced but has refcount 0; repair the image with 'qemu-img check -r all'.");
            }

            if (delta > 0 && (ulong)delta > MaxRefcount - value)
            {
                throw new KvmStorageException(
                    ErrorKind.InvalidOperation,
                    ImageErrorIds.SnapshotRefcountOverflow,
                    $"'{path}': cluster {cluster} would need refcount {value + (ulong)delta}, over the {bits}-bit limit {MaxRefcount}; convert the image with a larger refcount_bits.",
                    path);
            }
        }
    }

    /// <summary>Applies <paramref name="deltas"/> (checked by <see cref="Validate"/> first) and writes the blocks it changed.</summary>
    public void Adjust(IReadOnlyDictionary<ulong, long> deltas)
    {
        Validate(deltas);
        HashSet<ulong> touched = [];
        foreach ((ulong cluster, long delta) in deltas)
        {
            if (delta == 0)
            {
                continue;
            }

            ulong b = cluster / perBlock;
            byte[] block = Block(b);
            ulong value = Qcow2Entries.ReadRefcount(block, cluster % perBlock, bits);
            Qcow2Entries.WriteRefcount(block, cluster % perBlock, bits, delta > 0 ? value + (ulong)delta : value - (ulong)(-delta));
            touched.Add(b);
        }

        WriteBlocks(touched);
    }

    /// <summary>Plans <paramref name="count"/> new clusters at the end, plus the refcount structures they need.</summary>
    public Allocation Allocate(ulong count)
    {
        ulong start = FreeStart;
        ulong newBlocks = 0, newTable = 0;
        List<ulong> missing = [];
        while (true)
        {
            ulong total = newBlocks + newTable + count;
            ulong firstBlock = start / perBlock;
            ulong lastBlock = (start + total - 1) / perBlock;
            missing = [];
            for (ulong b = firstBlock; b <= lastBlock; b++)
            {
                if (b >= (ulong)table.Length || table[b] == 0)
                {
                    missing.Add(b);
                }
            }

            ulong needTable = lastBlock + 1 > (ulong)table.Length ? Qcow2Layout.CeilDiv((lastBlock + 1) * 8, clusterSize) : 0;
            if ((ulong)missing.Count <= newBlocks && needTable <= newTable)
            {
                break;
            }

            newBlocks = Math.Max(newBlocks, (ulong)missing.Count);
            newTable = Math.Max(newTable, needTable);
        }

        if (newTable * clusterSize > Qcow2Header.MaxRefcountTableBytes)
        {
            throw ImageErrors.Argument(ImageErrorIds.InvalidImageSize, "The image would need a refcount table over qemu's 8 MiB limit.", path);
        }

        // Pad to the planned count: spare blocks stay unused but keep the plan's offsets stable.
        return new Allocation(start, missing, newBlocks, newTable, start + newBlocks + newTable, count);
    }

    /// <summary>
    /// Writes the refcounts of a planned allocation, then the table entries that point at new blocks. With
    /// <paramref name="deferFlush"/> the last flush is left to the caller, who must flush before anything references the
    /// new clusters (the refcounts then become durable together with the data the caller writes into them); the flushes
    /// that order a new block before the table entry pointing at it are always made.
    /// </summary>
    public void Commit(Allocation plan, bool deferFlush = false)
    {
        ulong blockCluster = plan.Start;
        foreach (ulong b in plan.MissingBlocks)
        {
            blocks[b] = new byte[clusterSize];
            EnsureTableLength(b + 1);
            table[b] = blockCluster * clusterSize;
            blockCluster++;
        }

        HashSet<ulong> touched = [.. plan.MissingBlocks];
        ulong end = plan.DataStart + plan.DataClusters;
        for (ulong c = plan.Start; c < end; c++)
        {
            // Spare block clusters (planned but not needed) are skipped: they were never written.
            if (c >= plan.Start + (ulong)plan.MissingBlocks.Count && c < plan.Start + plan.BlockClusters)
            {
                continue;
            }

            ulong b = c / perBlock;
            Qcow2Entries.WriteRefcount(Block(b), c % perBlock, bits, 1);
            touched.Add(b);
        }

        // Every target is checked before the first write (qemu's overlap check): new blocks and a new table must land
        // on no metadata at all, blocks already in use on nothing but refcount blocks.
        ulong newTableOffset = (plan.Start + plan.BlockClusters) * clusterSize;
        foreach (ulong b in touched)
        {
            Map.EnsureFree(table[b], clusterSize, plan.MissingBlocks.Contains(b) ? Qcow2MetadataKind.None : Qcow2MetadataKind.RefcountBlock);
        }

        if (plan.TableClusters > 0)
        {
            Map.EnsureFree(newTableOffset, plan.TableClusters * clusterSize, Qcow2MetadataKind.None);
        }
        else if (plan.MissingBlocks.Count > 0)
        {
            Map.EnsureFree(tableOffset, SerializedTableBytes(), Qcow2MetadataKind.RefcountTable);
        }

        foreach (ulong b in plan.MissingBlocks)
        {
            Map.Add(Qcow2MetadataKind.RefcountBlock, table[b], clusterSize);
        }

        // The blocks first: a table entry must never point at an unwritten block.
        foreach (ulong b in touched)
        {
            ImageIo.Write(handle, blocks[b], table[b]);
        }

        if (!deferFlush || plan.MissingBlocks.Count > 0 || plan.TableClusters > 0)
        {
            PositionalFile.Flush(handle);
        }

        FreeStart = Math.Max(FreeStart, end);
        if (plan.TableClusters > 0)
        {
            ulong oldOffset = tableOffset, oldClusters = tableClusters;
            ulong newOffset = newTableOffset;
            EnsureTableLength(plan.TableClusters * clusterSize / 8);
            ImageIo.Write(handle, SerializeTable(), newOffset);
            PositionalFile.Flush(handle);

            // One write of bytes 48..59 switches tables (qcow2.rst "Header": refcount_table_offset and _clusters).
            byte[] fields = new byte[12];
            BinaryPrimitives.WriteUInt64BigEndian(fields, newOffset);
            BinaryPrimitives.WriteUInt32BigEndian(fields.AsSpan(8), (uint)plan.TableClusters);
            ImageIo.Write(handle, fields, 48);
            PositionalFile.Flush(handle);
            tableOffset = newOffset;
            tableClusters = plan.TableClusters;
            Map.Remove(Qcow2MetadataKind.RefcountTable, oldOffset, oldClusters * clusterSize);
            Map.Add(Qcow2MetadataKind.RefcountTable, newOffset, tableClusters * clusterSize);
            Free(oldOffset / clusterSize, oldClusters);
            PositionalFile.Flush(handle);
        }
        else if (plan.MissingBlocks.Count > 0)
        {
            ImageIo.Write(handle, SerializeTable(), tableOffset);
            if (!deferFlush)
            {
                PositionalFile.Flush(handle);
            }
        }
    }

    /// <summary>Drops one reference from each of <paramref name="count"/> clusters from <paramref name="first"/>.</summary>
    public void Free(ulong first, ulong count)
    {
        HashSet<ulong> touched = [];
        for (ulong c = first; c < first + count; c++)
        {
            ulong b = c / perBlock;
            if (b >= (ulong)table.Length || table[b] == 0)
            {
                continue;
            }

            byte[] block = Block(b);
            ulong value = Qcow2Entries.ReadRefcount(block, c % perBlock, bits);
            if (value > 0)
            {
                Qcow2Entries.WriteRefcount(block, c % perBlock, bits, value - 1);
                touched.Add(b);
            }
        }

        WriteBlocks(touched);
    }

    /// <summary>Writes changed refcount blocks, each checked first to lie on nothing but refcount blocks.</summary>
    private void WriteBlocks(HashSet<ulong> touched)
    {
        foreach (ulong b in touched)
        {
            Map.EnsureFree(table[b], clusterSize, Qcow2MetadataKind.RefcountBlock);
        }

        foreach (ulong b in touched)
        {
            ImageIo.Write(handle, blocks[b], table[b]);
        }
    }

    private ulong SerializedTableBytes() => Qcow2Layout.CeilDiv(Math.Max(tableClusters * clusterSize / 8, (ulong)table.Length) * 8, clusterSize) * clusterSize;

    private byte[] Block(ulong index)
    {
        if (blocks.TryGetValue(index, out byte[]? block))
        {
            return block;
        }

        ulong offset = table[index];
        Qcow2Resizer.CheckCluster(offset, clusterSize, handle, path);
        block = ImageIo.ReadBytes(handle, offset, (int)clusterSize, path);
        blocks[index] = block;
        return block;
    }

    private void EnsureTableLength(ulong entries)
    {
        if ((ulong)table.Length < entries)
        {
            if (entries * 8 > Qcow2Header.MaxRefcountTableBytes)
            {
                throw new KvmStorageException(ErrorKind.InvalidArgument, ImageErrorIds.InvalidImageSize, "The refcount table would exceed qemu's 8 MiB limit.", path);
            }

            Array.Resize(ref table, (int)entries);
        }
    }

    private byte[] SerializeTable()
    {
        ulong capacity = Math.Max(tableClusters * clusterSize / 8, (ulong)table.Length);
        byte[] raw = new byte[Qcow2Layout.CeilDiv(capacity * 8, clusterSize) * clusterSize];
        for (int i = 0; i < table.Length; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(i * 8), table[i]);
        }

        return raw;
    }

    /// <summary>
    /// New clusters from <see cref="Start"/>: <see cref="BlockClusters"/> refcount blocks, then
    /// <see cref="TableClusters"/> of a new refcount table (if any), then the caller's <see cref="DataClusters"/>.
    /// </summary>
    public sealed record Allocation(ulong Start, IReadOnlyList<ulong> MissingBlocks, ulong BlockClusters, ulong TableClusters, ulong DataStart, ulong DataClusters);
}
