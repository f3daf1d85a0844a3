using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using KvmStorage.Core.Images.Check;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>The refcount pass of a qcow2 check: the stored refcounts read and compared with the references counted.</summary>
internal sealed partial class Qcow2Checker
{
    private sealed partial class Analysis
    {
        /// <summary>qemu-img check -r leaks fails ("need to rebuild refcount structures"): a check error.</summary>
        public void NeedsRebuild()
        {
            CheckErrors++;
            Add(new ImageCorruption(Header.RefcountTableOffset, ImageCorruptionKind.CheckError, "the refcount structure must be rebuilt, which only a repair of everything (All) does."));
        }

        public ulong? StoredRefcount(ulong cluster)
        {
            ulong index = cluster / PerBlock;
            if (index >= (ulong)RefTable.LongLength)
            {
                return 0;
            }

            ulong blockOffset = Qcow2Entries.RefcountBlockOffset(RefTable[index]);
            if (blockOffset == 0)
            {
                return 0;
            }

            if (blockOffset % cs != 0)
            {
                return null;
            }

            if (!Blocks.TryGetValue(index, out byte[]? block))
            {
                block = new byte[cs];
                owner.ReadPadded(block, blockOffset);
                Blocks[index] = block;
            }

            return block is null ? null : Qcow2Entries.ReadRefcount(block, cluster % PerBlock, Header.RefcountBits);
        }

        public void SetStoredRefcount(ulong cluster, ulong value)
        {
            _ = StoredRefcount(cluster);
            Qcow2Entries.WriteRefcount(Blocks[cluster / PerBlock]!, cluster % PerBlock, Header.RefcountBits, value);
        }

        // Loops over every entry or unit: optimised on first use (see Qcow2Checker.Analysis.CheckL2).
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void LoadRefTable()
        {
            byte[] raw = new byte[(ulong)Header.RefcountTableClusters * cs];
            owner.ReadPadded(raw, Header.RefcountTableOffset);
            RefTable = new ulong[raw.Length / 8];
            for (int i = 0; i < RefTable.Length; i++)
            {
                RefTable[i] = BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
            }
        }

        /// <summary>qemu's <c>check_refblocks</c>: a broken refcount block means the whole structure must be rebuilt.</summary>
        // A loop over every entry of a table: compiled optimised on first use (no first-tier code, no on-stack
        // replacement on the next call), since a check is called a few times per session.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void CheckRefcountBlocks(bool countRefcountStructures)
        {
            for (ulong i = 0; i < (ulong)RefTable.LongLength; i++)
            {
                ulong raw = RefTable[i];
                ulong offset = Qcow2Entries.RefcountBlockOffset(raw);
                ulong cluster = offset >> bits;
                ulong at = Header.RefcountTableOffset + (i * 8);
                if ((raw & Qcow2Entries.RefcountTableReservedMask) != 0)
                {
                    Corruption(at, ImageCorruptionKind.ReservedBitsSet, $"refcount table entry {i} has reserved bits set.");
                    Rebuild = true;
                    continue;
                }

                if (offset % cs != 0)
                {
                    Corruption(offset, ImageCorruptionKind.InvalidRefcountBlock, $"refcount block {i} at 0x{offset:x} is not cluster aligned.");
                    Rebuild = true;
                    continue;
                }

                if (cluster >= nbClusters)
                {
                    Corruption(offset, ImageCorruptionKind.InvalidRefcountBlock, $"refcount block {i} at 0x{offset:x} lies outside the image.");
                    Rebuild = true;
                    continue;
                }

                if (offset != 0 && countRefcountStructures)
                {
                    IncRef(offset, cs, $"refcount block {i}");
                    if (refs[cluster] != 1)
                    {
                        Corruption(offset, ImageCorruptionKind.InvalidRefcountBlock, $"refcount block {i} at 0x{offset:x} is referenced {refs[cluster]} times.");
                        Rebuild = true;
                    }
                }
            }
        }

        /// <summary>qemu's <c>compare_refcounts</c>, over every cluster of the file.</summary>
        // A loop over every entry of a table: compiled optimised on first use (no first-tier code, no on-stack
        // replacement on the next call), since a check is called a few times per session.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void CompareRefcounts()
        {
            for (ulong i = 0; i < CompareClusters; i++)
            {
                ulong? stored = StoredRefcount(i);
                if (stored is not { } refcount)
                {
                    CheckErrors++;
                    Add(new ImageCorruption(i * cs, ImageCorruptionKind.CheckError, $"the refcount of cluster {i} cannot be read (its refcount block is misaligned)."));
                    continue;
                }

                ulong computed = Reference(i);
                if (refcount > 0 || computed > 0)
                {
                    HighestCluster = i;
                }

                if (refcount == computed)
                {
                    continue;
                }

                RefcountMismatch = true;
                if (refcount == 0)
                {
                    Rebuild = true;
                }

                if (refcount < computed)
                {
                    ImageCorruptionKind kind = computed > 1 && refcount > 0 ? ImageCorruptionKind.ClusterUsedTwice : ImageCorruptionKind.RefcountTooLow;
                    Corruption(i * cs, kind, $"cluster {i} refcount={refcount} reference={computed}.");
                }
                else
                {
                    Leaks++;
                    Add(new ImageCorruption(i * cs, ImageCorruptionKind.LeakedCluster, $"leaked cluster {i} refcount={refcount} reference={computed}."));
                }
            }
        }

        /// <summary>qemu's <c>check_oflag_copied</c>: in the active tables, copied ⇔ stored refcount 1.</summary>
        // A loop over every entry of a table: compiled optimised on first use (no first-tier code, no on-stack
        // replacement on the next call), since a check is called a few times per session.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void CheckCopiedBits()
        {
            if (Header.L1Size == 0)
            {
                return;
            }

            byte[] l1 = new byte[Header.L1Size * 8];
            owner.ReadPadded(l1, Header.L1TableOffset);
            byte[] l2 = new byte[cs];
            int entryBytes = Header.L2EntryBytes;
            var walked = new HashSet<ulong>();
            for (uint i = 0; i < Header.L1Size; i++)
            {
                ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l1.AsSpan((int)(i * 8)));
                ulong l2Offset = Qcow2Entries.HostOffset(entry);
                if (l2Offset == 0)
                {
                    continue;
                }

                ulong at = Header.L1TableOffset + ((ulong)i * 8);
                if (StoredRefcount(l2Offset >> bits) is not { } refcount)
                {
                    continue;
                }

                if ((refcount == 1) != Qcow2Entries.IsCopied(entry))
                {
                    Corruption(at, ImageCorruptionKind.CopiedFlagMismatch, $"L1 entry {i} (0x{entry:x16}): copied flag disagrees with the L2 table's refcount {refcount}.");
                    CopiedFixes[at] = Qcow2Entries.WithCopied(entry, refcount == 1);
                }

                // A table several L1 entries name (reported by CheckL1) is walked once here too: the work stays
                // bounded by what the file holds.
                if (!walked.Add(l2Offset))
                {
                    continue;
                }

                owner.ReadPadded(l2, l2Offset);
                for (ulong j = 0; j < Header.L2Entries; j++)
                {
                    ulong l2Entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((int)(j * (ulong)entryBytes)));
                    ClusterType type = TypeOf(l2Entry, Header.ExtendedL2, hasDataFile);
                    if (type is not (ClusterType.Normal or ClusterType.ZeroAlloc))
                    {
                        continue;
                    }

                    ulong dataOffset = Qcow2Entries.HostOffset(l2Entry);
                    ulong? stored = hasDataFile ? 1 : StoredRefcount(dataOffset >> bits);
                    if (stored is not { } dataRefcount)
                    {
                        continue;
                    }

                    if ((dataRefcount == 1) != Qcow2Entries.IsCopied(l2Entry))
                    {
                        ulong entryAt = l2Offset + (j * (ulong)entryBytes);
                        Corruption(entryAt, ImageCorruptionKind.CopiedFlagMismatch, $"L2 entry 0x{l2Entry:x16}: copied flag disagrees with the data cluster's refcount {dataRefcount}.");
                        CopiedFixes[entryAt] = Qcow2Entries.WithCopied(l2Entry, dataRefcount == 1);
                    }
                }
            }
        }
    }
}
