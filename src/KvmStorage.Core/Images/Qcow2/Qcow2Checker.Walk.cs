using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using KvmStorage.Core.Images.Check;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>The walk of a qcow2 check: every L1 and L2 table, the snapshot table and the header extensions, each reference counted.</summary>
internal sealed partial class Qcow2Checker
{
    private enum ClusterType
    {
        Unallocated,
        ZeroPlain,
        ZeroAlloc,
        Normal,
        Compressed,
    }

    private static ClusterType TypeOf(ulong entry, bool extendedL2, bool hasDataFile)
    {
        if (Qcow2Entries.IsCompressed(entry))
        {
            return ClusterType.Compressed;
        }

        if (Qcow2Entries.IsZero(entry) && !extendedL2)
        {
            return Qcow2Entries.HostOffset(entry) != 0 ? ClusterType.ZeroAlloc : ClusterType.ZeroPlain;
        }

        if (Qcow2Entries.HostOffset(entry) == 0)
        {
            return hasDataFile && Qcow2Entries.IsCopied(entry) ? ClusterType.Normal : ClusterType.Unallocated;
        }

        return ClusterType.Normal;
    }

    private sealed partial class Analysis
    {
        private void CheckL1(ulong l1Offset, uint l1Size, bool active, string what)
        {
            IncRef(l1Offset, (ulong)l1Size * 8, what);
            if (l1Size == 0)
            {
                return;
            }

            byte[] l1 = new byte[l1Size * 8];
            owner.ReadPadded(l1, l1Offset);
            byte[] l2 = new byte[cs];

            // An L2 table named twice by one L1 table is walked once: a crafted image can name one table millions of
            // times, and walking each would cost what the image declares, not what it holds.
            var walked = new Dictionary<ulong, uint>();
            for (uint i = 0; i < l1Size; i++)
            {
                owner.cancellationToken.ThrowIfCancellationRequested();
                progressDone++;
                owner.progress?.Report(new ImageProgress(progressDone * Header.L2Span, Math.Max(progressTotal, 1) * Header.L2Span));
                ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l1.AsSpan((int)(i * 8)));
                if (entry == 0)
                {
                    continue;
                }

                ulong entryOffset = l1Offset + ((ulong)i * 8);
                if ((entry & Qcow2Entries.L1ReservedMask) != 0)
                {
                    Corruption(entryOffset, ImageCorruptionKind.ReservedBitsSet, $"{what} entry {i} (0x{entry:x16}) has reserved bits set.");
                    StructuralFixes[entryOffset] = entry & ~Qcow2Entries.L1ReservedMask;
                }

                ulong l2Offset = Qcow2Entries.HostOffset(entry);
                if (!walked.TryAdd(l2Offset, i))
                {
                    Corruption(entryOffset, ImageCorruptionKind.ClusterUsedTwice, $"{what} entries {walked[l2Offset]} and {i} name the same L2 table (0x{l2Offset:x}); it is checked once, and a repair drops entry {i}.");
                    StructuralFixes[entryOffset] = 0;
                    continue;
                }

                bool inFile = IncRef(l2Offset, cs, $"L2 table of {what} entry {i}");
                bool aligned = l2Offset % cs == 0;
                if (!aligned)
                {
                    Corruption(l2Offset, ImageCorruptionKind.Misaligned, $"the L2 table at 0x{l2Offset:x} ({what} entry {i}) is not cluster aligned.");
                }

                // A table that is not where it claims to be cannot be trusted: the guest range becomes unallocated.
                bool dropTable = !inFile || !aligned;
                if (dropTable)
                {
                    StructuralFixes[entryOffset] = 0;
                }

                owner.ReadPadded(l2, l2Offset);
                CheckL2(l2, l2Offset, active, recordFixes: !dropTable);
            }
        }

        // A loop over every entry of a table: compiled optimised on first use (no first-tier code, no on-stack
        // replacement on the next call), since a check is called a few times per session.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void CheckL2(byte[] l2, ulong l2Offset, bool active, bool recordFixes)
        {
            bool extended = Header.ExtendedL2;
            int entryBytes = Header.L2EntryBytes;
            var compressed = new Qcow2Entries.CompressedDescriptor(bits);
            ulong nextContiguous = 0;

            // With a backing file "unallocated" would show the backing data; a zero cluster keeps reading zeros (v3).
            ulong zeroEntry = Header.Version >= 3 && !extended ? Qcow2Entries.ZeroFlag : 0;
            for (ulong j = 0; j < Header.L2Entries; j++)
            {
                ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((int)(j * (ulong)entryBytes)));
                ulong bitmap = extended ? BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((int)(j * (ulong)entryBytes) + 8)) : 0;
                ulong at = l2Offset + (j * (ulong)entryBytes);
                ClusterType type = TypeOf(entry, extended, hasDataFile);
                if (type != ClusterType.Compressed && (entry & Qcow2Entries.L2ReservedMask) != 0)
                {
                    Corruption(at, ImageCorruptionKind.ReservedBitsSet, $"L2 entry 0x{entry:x16} has reserved bits set.");
                    Fix(at, entry & ~Qcow2Entries.L2ReservedMask, recordFixes);
                }

                switch (type)
                {
                    case ClusterType.Compressed:
                    {
                        if (Qcow2Entries.IsCopied(entry))
                        {
                            Corruption(at, ImageCorruptionKind.InvalidCompressedDescriptor, $"compressed cluster 0x{compressed.HostOffset(entry):x}: the copied flag must never be set.");
                            entry = Qcow2Entries.WithCopied(entry, false);
                            Fix(at, entry, recordFixes);
                        }

                        if (hasDataFile)
                        {
                            Corruption(at, ImageCorruptionKind.InvalidCompressedDescriptor, "compressed cluster in an image with an external data file.");
                            break;
                        }

                        if (bitmap != 0)
                        {
                            Corruption(at, ImageCorruptionKind.InvalidCompressedDescriptor, $"compressed cluster with a subcluster bitmap 0x{bitmap:x16}.");
                            break;
                        }

                        if (!IncRef(compressed.HostOffset(entry), compressed.Length(entry), "compressed cluster"))
                        {
                            FixToZero(at, zeroEntry, recordFixes);
                        }

                        if (active)
                        {
                            Allocated++;
                            Compressed++;
                            Fragmented++;
                        }

                        break;
                    }

                    case ClusterType.Normal:
                    case ClusterType.ZeroAlloc:
                    {
                        ulong offset = Qcow2Entries.HostOffset(entry);
                        if (extended && ((bitmap >> 32) & bitmap) != 0)
                        {
                            Corruption(at, ImageCorruptionKind.ReservedBitsSet, $"cluster 0x{offset:x} has a corrupted subcluster bitmap.");
                        }

                        bool fixedAway = false;
                        if (offset % cs != 0)
                        {
                            Corruption(offset, ImageCorruptionKind.Misaligned, $"data cluster offset 0x{offset:x} is not cluster aligned; L2 entry corrupted.");
                            FixToZero(at, zeroEntry, recordFixes);
                            fixedAway = true;
                        }

                        if (active)
                        {
                            Allocated++;
                            if (nextContiguous != 0 && offset != nextContiguous)
                            {
                                Fragmented++;
                            }

                            nextContiguous = offset + cs;
                        }

                        if (!hasDataFile && !IncRef(offset, cs, "data cluster") && !fixedAway)
                        {
                            FixToZero(at, zeroEntry, recordFixes);
                        }

                        break;
                    }

                    case ClusterType.Unallocated:
                        if (extended && (bitmap & Qcow2Entries.AllSubclustersAllocated) != 0)
                        {
                            Corruption(at, ImageCorruptionKind.ReservedBitsSet, "an unallocated cluster has subclusters marked allocated.");
                        }

                        break;
                }
            }
        }

        private List<(ulong L1Offset, uint L1Size, string Name)> ReadSnapshots(out ulong size)
        {
            size = 0;
            var list = new List<(ulong, uint, string)>();
            if (Header.SnapshotCount == 0)
            {
                return list;
            }

            // The table was validated by qemu's rules (lengths, limits) before it is walked here.
            List<SnapshotInfo> infos = Qcow2SnapshotTable.Read(owner.handle, Header, FileLength, owner.path);
            byte[] fixedPart = new byte[40];
            ulong position = Header.SnapshotsOffset;
            foreach (SnapshotInfo info in infos)
            {
                owner.ReadPadded(fixedPart, position);
                ulong length = 40UL + BinaryPrimitives.ReadUInt32BigEndian(fixedPart.AsSpan(36)) + BinaryPrimitives.ReadUInt16BigEndian(fixedPart.AsSpan(12)) + BinaryPrimitives.ReadUInt16BigEndian(fixedPart.AsSpan(14));
                length = (length + 7) & ~7UL;
                position += length;
                list.Add((info.L1TableOffset, info.L1Size, string.IsNullOrEmpty(info.Name) ? info.Id : info.Name));
            }

            size = position - Header.SnapshotsOffset;
            return list;
        }

        /// <summary>The encryption header and persistent bitmaps are refcounted like everything else.</summary>
        private void CountExtensions(byte[] head)
        {
            ulong end = Header.BackingFileOffset != 0 ? Header.BackingFileOffset : Math.Min(cs, (ulong)head.Length);
            end = Math.Min(end, (ulong)head.Length);
            ulong offset = Header.HeaderLength;
            while (offset + 8 <= end)
            {
                uint type = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan((int)offset));
                uint length = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan((int)offset + 4));
                offset += 8;
                if (type == Qcow2Header.ExtEnd || length > end - offset)
                {
                    break;
                }

                ReadOnlySpan<byte> data = head.AsSpan((int)offset, (int)length);
                if (type == Qcow2Header.ExtCryptoHeader && length >= 16)
                {
                    IncRef(BinaryPrimitives.ReadUInt64BigEndian(data), BinaryPrimitives.ReadUInt64BigEndian(data[8..]), "encryption header");
                }
                else if (type == Qcow2Header.ExtBitmaps && length >= 24 && (Header.AutoclearFeatures & Qcow2Header.AutoclearBitmaps) != 0)
                {
                    CountBitmaps(BinaryPrimitives.ReadUInt32BigEndian(data), BinaryPrimitives.ReadUInt64BigEndian(data[8..]), BinaryPrimitives.ReadUInt64BigEndian(data[16..]));
                }

                offset += (length + 7UL) & ~7UL;
            }
        }

        private void CountBitmaps(uint count, ulong directorySize, ulong directoryOffset)
        {
            // qemu limits the directory to 64 MiB (QCOW2_MAX_BITMAP_DIRECTORY_SIZE).
            if (count == 0 || directorySize > 64UL * 1024 * 1024 || !IncRef(directoryOffset, directorySize, "bitmap directory"))
            {
                return;
            }

            byte[] directory = new byte[directorySize];
            owner.ReadPadded(directory, directoryOffset);
            int position = 0;
            for (uint i = 0; i < count && position + 24 <= directory.Length; i++)
            {
                ulong tableOffset = BinaryPrimitives.ReadUInt64BigEndian(directory.AsSpan(position));
                uint tableSize = BinaryPrimitives.ReadUInt32BigEndian(directory.AsSpan(position + 8));
                int nameSize = BinaryPrimitives.ReadUInt16BigEndian(directory.AsSpan(position + 14));
                uint extraSize = BinaryPrimitives.ReadUInt32BigEndian(directory.AsSpan(position + 16));
                position += (int)((24 + extraSize + (ulong)nameSize + 7) & ~7UL);
                if ((ulong)tableSize * 8 > Qcow2Header.MaxL1Bytes || !IncRef(tableOffset, (ulong)tableSize * 8, "bitmap table"))
                {
                    CheckErrors++;
                    Add(new ImageCorruption(tableOffset, ImageCorruptionKind.CheckError, $"bitmap {i}: its table could not be read."));
                    continue;
                }

                byte[] table = new byte[tableSize * 8];
                owner.ReadPadded(table, tableOffset);
                for (uint k = 0; k < tableSize; k++)
                {
                    ulong clusterOffset = Qcow2Entries.HostOffset(BinaryPrimitives.ReadUInt64BigEndian(table.AsSpan((int)(k * 8))));
                    if (clusterOffset != 0)
                    {
                        IncRef(clusterOffset, cs, "bitmap data cluster");
                    }
                }
            }
        }
    }
}
