using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// Checks and repairs a qcow2 image the way <c>qemu-img check</c> does (qemu's block/qcow2-refcount.c,
/// <c>qcow2_check_refcounts</c>): rebuild every cluster's reference count from the metadata, compare it with the
/// stored refcounts, then check the copied flags of the active tables. The counts it reports are qemu's.
/// </summary>
internal sealed class Qcow2Checker
{
    private const int MaxFindings = 10_000;

    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly IProgress<ImageProgress>? progress;
    private readonly CancellationToken cancellationToken;

    public Qcow2Checker(SafeFileHandle handle, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        this.handle = handle;
        this.path = path;
        this.progress = progress;
        this.cancellationToken = cancellationToken;
    }

    private enum ClusterType
    {
        Unallocated,
        ZeroPlain,
        ZeroAlloc,
        Normal,
        Compressed,
    }

    public ImageCheckResult Run(ImageRepairMode mode)
    {
        Analysis before = Analyze(countRefcountStructures: true);
        if (mode == ImageRepairMode.None)
        {
            return ToResult(before, before);
        }

        if (mode == ImageRepairMode.Leaks)
        {
            // qemu-img check -r leaks: fixing leaks in place is only safe when the refcount structure itself is sound.
            if (before.Rebuild)
            {
                Analysis unchanged = Analyze(countRefcountStructures: true);
                unchanged.NeedsRebuild();
                return ToResult(before, unchanged);
            }

            if (before.Leaks > 0)
            {
                FreeLeaks(before);
            }

            // qemu then repairs copied flags too when they are the only errors left: freeing a leak can bring a
            // shared cluster back to refcount 1 (a snapshot create killed midway leaves exactly that).
            Analysis afterLeaks = Analyze(countRefcountStructures: true);
            if (afterLeaks.CopiedFixes.Count > 0 && afterLeaks.Corruptions == (ulong)afterLeaks.CopiedFixes.Count && afterLeaks.Leaks == 0 && afterLeaks.CheckErrors == 0)
            {
                WriteEntries(afterLeaks.CopiedFixes);
            }
        }
        else
        {
            RepairAll(before);
        }

        Analysis after = Analyze(countRefcountStructures: true);
        if (after.Corruptions == 0 && after.CheckErrors == 0)
        {
            ClearDirtyAndCorruptBits(after.Header);
            after = Analyze(countRefcountStructures: true);
        }

        return ToResult(before, after);
    }

    private void RepairAll(Analysis before)
    {
        Analysis current = before;

        // 1. Entries that point outside the file or at misaligned places: after this they read as zeros (or are
        //    unallocated). Clearing a pointer first and fixing refcounts later can at worst leak a cluster.
        if (current.StructuralFixes.Count > 0)
        {
            WriteEntries(current.StructuralFixes);
            current = Analyze(countRefcountStructures: true);
        }

        // 2. Any refcount mismatch: a new refcount structure from the references, switched to in one header write.
        if (current.RefcountMismatch || current.Rebuild)
        {
            cancellationToken.ThrowIfCancellationRequested();
            RebuildRefcounts();
            current = Analyze(countRefcountStructures: true);
        }

        // 3. Copied flags from the now correct refcounts.
        if (current.CopiedFixes.Count > 0)
        {
            WriteEntries(current.CopiedFixes);
        }
    }

    /// <summary>
    /// Reads a qcow2 header for optimizing: refused unless it is consistent (a check finds nothing) and of a kind
    /// this code rewrites (no extended L2, external data file or encryption).
    /// </summary>
    internal static Qcow2Header ReadSoundHeader(SafeFileHandle handle, string path, out byte[] cluster0)
    {
        ImageCheckResult check = new Qcow2Checker(handle, path, null, CancellationToken.None).Run(ImageRepairMode.None);
        if (check.Errors > 0 || check.MarkedCorrupt || check.DirtyFlag)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, ImageErrorIds.ImageCorrupt, $"'{path}' has {check.Errors} error(s){(check.DirtyFlag ? " and the dirty bit set" : string.Empty)}; repair it with 'Test-Volume -Repair All' first.", path);
        }

        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        byte[] head = ImageIo.ReadBytes(handle, 0, (int)Math.Min(64UL * 1024, fileLength), path);
        Qcow2Header header = Qcow2Reader.ReadHeader(handle, head, fileLength, path);
        if (header.ExtendedL2 || header.DataFile is not null || (header.IncompatibleFeatures & Qcow2Header.IncompatDataFile) != 0 || header.CryptMethod != 0)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, "optimizing qcow2 images with extended L2 entries, an external data file or encryption is not supported.");
        }

        cluster0 = new byte[header.ClusterSize];
        PositionalFile.ReadZeroPadded(handle, cluster0, 0);
        return header;
    }

    private ImageCheckResult ToResult(Analysis before, Analysis after) => new()
    {
        Path = path,
        ImageFormat = ImageFormat.Qcow2,
        CorruptionCount = after.Corruptions,
        CheckErrors = after.CheckErrors,
        Leaks = after.Leaks,
        Corruptions = after.Findings,
        CorruptionsFixed = before.Corruptions > after.Corruptions ? before.Corruptions - after.Corruptions : 0,
        LeaksFixed = before.Leaks > after.Leaks ? before.Leaks - after.Leaks : 0,
        ImageEndOffset = (after.HighestCluster + 1) * after.Header.ClusterSize,
        TotalClusters = Qcow2Layout.CeilDiv(after.Header.Size & ~511UL, after.Header.ClusterSize),
        AllocatedClusters = after.Allocated,
        FragmentedClusters = after.Fragmented,
        CompressedClusters = after.Compressed,
        DirtyFlag = after.Header.Dirty,
        MarkedCorrupt = after.Header.Corrupt,
    };

    private Analysis Analyze(bool countRefcountStructures)
    {
        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        byte[] head = ImageIo.ReadBytes(handle, 0, (int)Math.Min(64UL * 1024, fileLength), path);
        // qemu opens images whose tables lie past the end of the file (they read as zeros) and reports them as
        // corruptions, so the header is validated here without the end-of-file rule.
        Qcow2Header header = Qcow2Reader.ReadHeader(handle, head, long.MaxValue, path);
        if (header.ClusterSize > (ulong)head.Length && fileLength > (ulong)head.Length)
        {
            head = ImageIo.ReadBytes(handle, 0, (int)Math.Min(header.ClusterSize, fileLength), path);
        }

        var analysis = new Analysis(this, header, fileLength);
        analysis.Run(head, countRefcountStructures);
        return analysis;
    }

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
        ulong blocks = 1, tableClusters = 1;
        while (true)
        {
            ulong end = start + blocks + tableClusters;
            ulong needBlocks = Qcow2Layout.CeilDiv(end, perBlock);
            ulong needTable = Qcow2Layout.CeilDiv(needBlocks * 8, cs);
            if (needBlocks <= blocks && needTable <= tableClusters)
            {
                break;
            }

            blocks = Math.Max(blocks, needBlocks);
            tableClusters = Math.Max(tableClusters, needTable);
        }

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

    /// <summary>Reads, filling what lies past the end of the file with zeros (as qemu's file driver does).</summary>
    private void ReadPadded(Span<byte> buffer, ulong offset) => PositionalFile.ReadZeroPadded(handle, buffer, offset);

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

    /// <summary>One pass over the metadata: the references counted, the stored refcounts, what is wrong and how to fix it.</summary>
    private sealed class Analysis
    {
        private readonly Qcow2Checker owner;
        private readonly ulong cs;
        private readonly int bits;
        private readonly bool hasDataFile;
        private readonly ulong nbClusters;
        private uint[] refs;
        private ulong progressDone;
        private ulong progressTotal;

        public Analysis(Qcow2Checker owner, Qcow2Header header, ulong fileLength)
        {
            this.owner = owner;
            Header = header;
            FileLength = fileLength;
            cs = header.ClusterSize;
            bits = header.ClusterBits;
            hasDataFile = (header.IncompatibleFeatures & Qcow2Header.IncompatDataFile) != 0;
            nbClusters = Qcow2Layout.CeilDiv(fileLength, cs);
            if (nbClusters >= int.MaxValue)
            {
                throw ImageErrors.NotSupported(ImageErrorIds.ImageTooLarge, owner.path, "the file has too many clusters to check.");
            }

            refs = new uint[nbClusters + 1];
            CompareClusters = nbClusters;
            PerBlock = Qcow2Entries.RefcountsPerBlock(header.ClusterSize, header.RefcountBits);
            RefTable = [];
        }

        public Qcow2Header Header { get; }

        public ulong FileLength { get; }

        public ulong PerBlock { get; }

        public ulong Corruptions { get; private set; }

        public ulong Leaks { get; private set; }

        public ulong CheckErrors { get; private set; }

        public bool Rebuild { get; private set; }

        public bool RefcountMismatch { get; private set; }

        public ulong HighestCluster { get; private set; }

        public ulong Allocated { get; private set; }

        public ulong Fragmented { get; private set; }

        public ulong Compressed { get; private set; }

        public ulong CompareClusters { get; private set; }

        public ulong ReferenceCount => (ulong)refs.LongLength;

        public List<ImageCorruption> Findings { get; } = [];

        /// <summary>File offset of an 8-byte entry → the value that makes it valid (Repair All, step 1).</summary>
        public Dictionary<ulong, ulong> StructuralFixes { get; } = [];

        /// <summary>File offset of an active L1/L2 entry → the value with the right copied flag.</summary>
        public Dictionary<ulong, ulong> CopiedFixes { get; } = [];

        public ulong[] RefTable { get; private set; }

        public Dictionary<ulong, byte[]?> Blocks { get; } = [];

        public ulong Reference(ulong cluster) => cluster < (ulong)refs.LongLength ? refs[cluster] : 0;

        public void Run(byte[] head, bool countRefcountStructures)
        {
            List<(ulong L1Offset, uint L1Size, string Name)> snapshots = ReadSnapshots(out ulong snapshotsSize);
            progressTotal = Header.L1Size + (ulong)snapshots.Sum(s => (long)s.L1Size);

            // qcow2_check_refcounts → calculate_refcounts: header, active L1, snapshots, their table, the refcount
            // table, the encryption header, bitmaps, then the refcount blocks themselves.
            IncRef(0, cs, "header");
            CheckL1(Header.L1TableOffset, Header.L1Size, active: true, "active L1 table");
            if (hasDataFile && snapshots.Count > 0)
            {
                Corruption(Header.SnapshotsOffset, ImageCorruptionKind.InvalidSnapshot, "internal snapshots are not allowed with an external data file.");
            }

            foreach ((ulong l1Offset, uint l1Size, string name) in snapshots)
            {
                if (l1Offset % cs != 0)
                {
                    Corruption(l1Offset, ImageCorruptionKind.InvalidSnapshot, $"snapshot '{name}': L1 table at 0x{l1Offset:x} is not cluster aligned.");
                    continue;
                }

                if ((ulong)l1Size * 8 > Qcow2Header.MaxL1Bytes)
                {
                    Corruption(l1Offset, ImageCorruptionKind.InvalidSnapshot, $"snapshot '{name}': L1 table of {l1Size} entries is too large.");
                    continue;
                }

                CheckL1(l1Offset, l1Size, active: false, $"L1 table of snapshot '{name}'");
            }

            IncRef(Header.SnapshotsOffset, snapshotsSize, "snapshot table");
            if (countRefcountStructures)
            {
                IncRef(Header.RefcountTableOffset, (ulong)Header.RefcountTableClusters * cs, "refcount table");
            }

            CountExtensions(head);
            LoadRefTable();
            CheckRefcountBlocks(countRefcountStructures);
            CompareRefcounts();
            CheckCopiedBits();
        }

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

        private void Corruption(ulong offset, ImageCorruptionKind kind, string message)
        {
            Corruptions++;
            Add(new ImageCorruption(offset, kind, message));
        }

        private void Add(ImageCorruption finding)
        {
            if (Findings.Count < MaxFindings)
            {
                Findings.Add(finding);
            }
        }

        /// <summary>qemu's <c>qcow2_inc_refcounts_imrt</c>; false when the range lies a cluster or more past the end of the file.</summary>
        private bool IncRef(ulong offset, ulong size, string what)
        {
            if (size == 0)
            {
                return true;
            }

            // The last cluster may be partly written, so up to one cluster past the end is tolerated.
            if (offset >= FileLength + cs || offset + size >= FileLength + cs)
            {
                Corruption(offset, ImageCorruptionKind.PastEndOfFile, $"the {what} at 0x{offset:x} ({size} bytes) lies a cluster or more past the end of the file (0x{FileLength:x}).");
                return false;
            }

            ulong max = Header.RefcountBits >= 32 ? uint.MaxValue : (1UL << Header.RefcountBits) - 1;
            for (ulong k = offset >> bits; k <= (offset + size - 1) >> bits; k++)
            {
                if (k >= (ulong)refs.LongLength)
                {
                    Array.Resize(ref refs, (int)k + 1);
                }

                if (k >= CompareClusters)
                {
                    CompareClusters = k + 1;
                }

                if (refs[k] >= max)
                {
                    Corruption(k * cs, ImageCorruptionKind.RefcountOverflow, $"cluster {k} is referenced more often than a {Header.RefcountBits}-bit refcount can count.");
                    continue;
                }

                refs[k]++;
            }

            return true;
        }

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

        private void Fix(ulong at, ulong value, bool record)
        {
            if (record)
            {
                StructuralFixes[at] = value;
            }
        }

        /// <summary>The entry will read as zeros: a zero cluster (v3), all-zero subclusters (extended L2), or unallocated (v2).</summary>
        private void FixToZero(ulong at, ulong zeroEntry, bool record)
        {
            Fix(at, zeroEntry, record);
            if (Header.ExtendedL2)
            {
                Fix(at + 8, Qcow2Entries.AllSubclustersZero, record);
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
