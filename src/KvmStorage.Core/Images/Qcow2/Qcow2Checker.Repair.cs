using System.Buffers.Binary;
using KvmStorage.Core.IO;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>The repairs of a qcow2 check: leaks freed, refcount structures rebuilt, entries rewritten, header bits cleared.</summary>
internal sealed partial class Qcow2Checker
{
    private void FreeLeaks(Analysis analysis)
    {
        var touched = new HashSet<ulong>();
        for (ulong i = 0; i < analysis.CompareClusters; i++)
        {
            ulong? stored = analysis.StoredRefcount(i);
            ulong computed = analysis.Reference(i);
            if (stored is { } s && s > computed)
            {
                analysis.SetStoredRefcount(i, computed);
                touched.Add(i / analysis.PerBlock);
            }
        }

        foreach (ulong block in touched)
        {
            ImageIo.Write(handle, analysis.Blocks[block]!, Qcow2Entries.RefcountBlockOffset(analysis.RefTable[block]));
        }

        Flush();
    }

    /// <summary>
    /// Writes a new refcount table and blocks past everything in use, then switches the header to them. The old
    /// structures are not referenced by the new ones, so they are free the moment the header switches.
    /// </summary>
    private void RebuildRefcounts()
    {
        Analysis counts = Analyze(countRefcountStructures: false);
        Qcow2Header header = counts.Header;
        ulong cs = header.ClusterSize;
        ulong perBlock = counts.PerBlock;
        ulong used = 0;
        for (ulong i = counts.ReferenceCount; i-- > 0;)
        {
            if (counts.Reference(i) > 0)
            {
                used = i + 1;
                break;
            }
        }

        ulong start = Math.Max(Qcow2Layout.CeilDiv(counts.FileLength, cs), used);
        (ulong blocks, ulong tableClusters) = Qcow2Layout.RefcountStructure(start, perBlock, cs);

        if (tableClusters * cs > Qcow2Header.MaxRefcountTableBytes)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, "the rebuilt refcount table would exceed qemu's 8 MiB limit.");
        }

        ulong newEnd = start + blocks + tableClusters;
        ulong max = header.RefcountBits >= 64 ? ulong.MaxValue : (1UL << header.RefcountBits) - 1;
        byte[] block = new byte[cs];
        byte[] table = new byte[tableClusters * cs];
        for (ulong b = 0; b < blocks; b++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Array.Clear(block);
            for (ulong k = 0; k < perBlock; k++)
            {
                ulong c = (b * perBlock) + k;
                ulong value = c >= newEnd ? 0 : c >= start ? 1 : Math.Min(counts.Reference(c), max);
                if (value != 0)
                {
                    Qcow2Entries.WriteRefcount(block, k, header.RefcountBits, value);
                }
            }

            ulong blockOffset = (start + b) * cs;
            ImageIo.Write(handle, block, blockOffset);
            BinaryPrimitives.WriteUInt64BigEndian(table.AsSpan((int)(b * 8)), blockOffset);
        }

        ulong tableOffset = (start + blocks) * cs;
        ImageIo.Write(handle, table, tableOffset);

        // qcow2.rst "Host cluster management": the new structure must be durable before the header points at it;
        // refcount_table_offset and refcount_table_clusters (bytes 48..59) then change in one write.
        Flush();
        byte[] fields = new byte[12];
        BinaryPrimitives.WriteUInt64BigEndian(fields, tableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(fields.AsSpan(8), (uint)tableClusters);
        ImageIo.Write(handle, fields, 48);
        Flush();
    }

    private void ClearDirtyAndCorruptBits(Qcow2Header header)
    {
        if (header.Version < 3 || (!header.Dirty && !header.Corrupt))
        {
            return;
        }

        // Everything the bits guard is durable before they go.
        Flush();
        byte[] bits = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(bits, header.IncompatibleFeatures & ~(Qcow2Header.IncompatDirty | Qcow2Header.IncompatCorrupt));
        ImageIo.Write(handle, bits, 72);
        Flush();
    }

    private void WriteEntries(IReadOnlyDictionary<ulong, ulong> entries)
    {
        byte[] value = new byte[8];
        foreach ((ulong offset, ulong entry) in entries.OrderBy(e => e.Key))
        {
            BinaryPrimitives.WriteUInt64BigEndian(value, entry);
            ImageIo.Write(handle, value, offset);
        }

        Flush();
    }

    private void Flush() => PositionalFile.Flush(handle);
}
