using System.Buffers.Binary;
using System.Numerics;
using KvmStorage.Core.Images.Qcow2.Snapshots;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// <c>qemu-img amend</c> for qcow2 (qemu's qcow2_amend_options): the compatibility level, lazy refcounts and the
/// refcount width, in qemu's order (upgrade first, then the refcount width, lazy refcounts, and the downgrade last).
/// Every refusal is made by <see cref="Plan"/>, before the first write. Each step keeps qcow2.rst's ordering, so that
/// a crash leaves a valid image with the guest's data unchanged (at worst leaked clusters):
/// <list type="bullet">
/// <item>upgrade: a snapshot table that lacks v3's extra data is written anew and flushed, then one write of cluster 0
/// makes the image version 3 and points at it; the old table is freed afterwards;</item>
/// <item>refcount width: new refcount blocks and table are written past everything in use and flushed (counting
/// themselves, and the old structures as free), then one write of the header switches to them;</item>
/// <item>lazy refcounts: one header field;</item>
/// <item>downgrade: every zero cluster of every L1 table (the snapshots' too) becomes what version 2 can say (an
/// unallocated cluster, or with a backing file a new cluster of zeros, counted and flushed before any entry points at
/// it), the tables are flushed, the replaced clusters freed, and only then one write of cluster 0 makes it version 2.
/// Unlike qemu 7.2, a zero cluster that keeps its space is never overwritten with zeros: a snapshot may still read it.</item>
/// </list>
/// </summary>
internal sealed class Qcow2Amender
{
    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly Qcow2Header header;
    private readonly List<Qcow2SnapshotTable.Entry> snapshots;
    private readonly Qcow2ClusterReferences references;
    private readonly ulong cs;

    private Qcow2Amender(SafeFileHandle handle, string path, Qcow2Header header, List<Qcow2SnapshotTable.Entry> snapshots)
    {
        this.handle = handle;
        this.path = path;
        this.header = header;
        this.snapshots = snapshots;
        cs = header.ClusterSize;
        references = new Qcow2ClusterReferences(handle, path, header);
    }

    /// <summary>Reads the header (all of cluster 0) and the snapshot table; refuses images that must not be written.</summary>
    public static Qcow2Amender Open(SafeFileHandle handle, string path)
    {
        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        byte[] probe = ImageIo.ReadBytes(handle, 0, (int)Math.Min(fileLength, 512), path);
        uint bits = probe.Length >= 24 ? BinaryPrimitives.ReadUInt32BigEndian(probe.AsSpan(20)) : 0;
        ulong cluster = 1UL << (int)Math.Clamp(bits, (uint)Qcow2Header.MinClusterBits, (uint)Qcow2Header.MaxClusterBits);
        byte[] head = ImageIo.ReadBytes(handle, 0, (int)Math.Min(fileLength, cluster), path);
        Qcow2Header header = Qcow2Header.Parse(head, fileLength, path);
        if (header.Dirty)
        {
            throw ImageErrors.Dirty(path);
        }

        if (header.Corrupt)
        {
            throw ImageErrors.MarkedCorrupt(path);
        }

        if ((header.IncompatibleFeatures & Qcow2Header.IncompatDataFile) != 0)
        {
            throw ImageAmender.NotPossible(path, "the image keeps its data in an external data file, which the module does not write.");
        }

        return new Qcow2Amender(handle, path, header, Qcow2SnapshotTable.ReadEntries(handle, header, fileLength, path));
    }

    /// <summary>Checks the options against the image and decides every step; writes nothing.</summary>
    public AmendSteps Plan(ImageAmendOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        int version = header.Version;
        int target = options.Compat switch
        {
            null => version,
            "1.1" or "v3" => 3,
            "0.10" or "v2" => 2,
            _ => throw ImageAmender.Invalid(path, $"Unknown compatibility level '{options.Compat}' (use 1.1 or 0.10)."),
        };
        int bits = header.RefcountBits;
        int targetBits = options.RefcountBits ?? bits;
        if (targetBits < 1 || targetBits > 64 || !BitOperations.IsPow2(targetBits))
        {
            throw ImageAmender.Invalid(path, $"The refcount width {targetBits} must be a power of two from 1 to 64 bits.");
        }

        bool lazy = (header.CompatibleFeatures & Qcow2Header.CompatLazyRefcounts) != 0;
        if (target < 3 && options.LazyRefcounts == true)
        {
            throw ImageAmender.Invalid(path, "Lazy refcounts need compat 1.1 (qcow2 version 3).");
        }

        if (target < 3 && targetBits != 16)
        {
            throw ImageAmender.Invalid(path, options.RefcountBits is null
                ? $"compat 0.10 needs 16-bit refcounts and the image has {bits}-bit ones: add a refcount width of 16."
                : "Refcount widths other than 16 bits need compat 1.1 (qcow2 version 3).");
        }

        var steps = new AmendSteps { Upgrade = target > version, Downgrade = target < version, RefcountBits = targetBits != bits ? targetBits : null };
        bool targetLazy = target < 3 ? false : options.LazyRefcounts ?? lazy;
        if (targetLazy != lazy && !steps.Downgrade)
        {
            steps.LazyRefcounts = targetLazy;
        }

        if (steps.RefcountBits is { } newBits && newBits < bits)
        {
            CheckRefcountsFit(newBits);
        }

        if (steps.Downgrade)
        {
            PlanDowngrade(steps);
        }

        var changes = new List<string>();
        if (steps.Upgrade)
        {
            changes.Add("upgrade to compat 1.1 (qcow2 version 3)" + (snapshots.Exists(NeedsExtraData) ? ", rewriting the snapshot table with v3's extra data" : string.Empty));
        }

        if (steps.RefcountBits is { } width)
        {
            changes.Add($"rewrite the refcount structures with {width}-bit refcounts (from {bits})");
        }

        if (steps.LazyRefcounts is { } on)
        {
            changes.Add(on ? "turn lazy refcounts on" : "turn lazy refcounts off");
        }

        if (steps.Downgrade)
        {
            string zeros = steps.ZeroTables.Count == 0
                ? string.Empty
                : $", turning {steps.ZeroEntries} zero cluster(s) into {(header.BackingFileOffset != 0 ? "clusters of zeros" : "unallocated ones")}";
            changes.Add($"downgrade to compat 0.10 (qcow2 version 2){zeros}" + (lazy ? ", lazy refcounts off" : string.Empty));
        }

        steps.Public = new ImageAmendPlan { Path = path, Changes = changes };
        return steps;
    }

    /// <summary>Makes the planned changes (see the class remarks for their order and crash safety).</summary>
    public void Run(AmendSteps steps, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(steps);
        ulong total = (ulong)steps.Public.Changes.Count;
        ulong done = 0;
        Qcow2Header current = header;
        if (steps.Upgrade)
        {
            cancellationToken.ThrowIfCancellationRequested();
            current = Upgrade(current);
            progress?.Report(new ImageProgress(++done, total));
        }

        if (steps.RefcountBits is { } bits)
        {
            cancellationToken.ThrowIfCancellationRequested();
            current = ChangeRefcountWidth(current, bits, cancellationToken);
            progress?.Report(new ImageProgress(++done, total));
        }

        if (steps.LazyRefcounts is { } lazy)
        {
            ulong compatible = lazy ? current.CompatibleFeatures | Qcow2Header.CompatLazyRefcounts : current.CompatibleFeatures & ~Qcow2Header.CompatLazyRefcounts;
            byte[] field = new byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(field, compatible);
            ImageIo.Write(handle, field, 80);
            ImageAmender.Flush(handle);
            progress?.Report(new ImageProgress(++done, total));
        }

        if (steps.Downgrade)
        {
            cancellationToken.ThrowIfCancellationRequested();
            (current, _) = ReadClusterZero();
            ExpandZeroClusters(current, steps, cancellationToken);
            cancellationToken.ThrowIfCancellationRequested();

            // The last write: from here the image is version 2 (no feature table, zlib, no feature bits).
            WriteClusterZero(2, null, 0);
            progress?.Report(new ImageProgress(++done, total));
        }
    }

    /// <summary>What <see cref="Plan"/> decided: the public plan and what the steps need.</summary>
    internal sealed class AmendSteps
    {
        public ImageAmendPlan Public { get; set; } = null!;

        public bool Upgrade { get; init; }

        public bool Downgrade { get; init; }

        public int? RefcountBits { get; init; }

        public bool? LazyRefcounts { get; set; }

        /// <summary>Downgrade: the L2 tables holding zero clusters, each with the number of L1 tables that reference it.</summary>
        public Dictionary<ulong, ulong> ZeroTables { get; } = [];

        public ulong ZeroEntries { get; set; }
    }

    private static bool NeedsExtraData(Qcow2SnapshotTable.Entry entry) => ExtraDataSize(entry.Bytes) < 16;

    private static uint ExtraDataSize(byte[] entry) => BinaryPrimitives.ReadUInt32BigEndian(entry.AsSpan(36));

    /// <summary>qemu's qcow2_downgrade checks, in its order, and the walk that finds the zero clusters to expand.</summary>
    private void PlanDowngrade(AmendSteps steps)
    {
        foreach (Qcow2SnapshotTable.Entry s in snapshots)
        {
            // A version 2 reader knows only the 32-bit VM state size and takes the disk size from the header.
            if (s.Info.VmStateSize > uint.MaxValue || (s.Info.DiskSize is { } size && size != header.Size))
            {
                throw ImageAmender.NotPossible(path, $"snapshot '{s.Info.Name}' has a disk size or VM state a version 2 image cannot describe (qemu: \"Internal snapshots prevent downgrade of image\").");
            }
        }

        ulong incompatible = header.IncompatibleFeatures & ~(Qcow2Header.IncompatCompression | Qcow2Header.IncompatDirty);
        if (incompatible != 0)
        {
            string what = (incompatible & Qcow2Header.IncompatExtendedL2) != 0 ? " (extended L2 entries)" : string.Empty;
            throw ImageAmender.NotPossible(path, $"the image has incompatible features 0x{incompatible:x} set{what}, which version 2 cannot describe.");
        }

        if (header.HasBitmaps || (header.AutoclearFeatures & Qcow2Header.AutoclearBitmaps) != 0)
        {
            // qemu downgrades and leaves the bitmaps inconsistent and their clusters leaked; refusing keeps them.
            throw new Errors.KvmStorageException(Errors.ErrorKind.InvalidOperation, ImageErrorIds.BitmapsNotWritable, $"'{path}' has persistent dirty bitmaps, which a version 2 image cannot keep; remove them first (qemu-img bitmap --remove).", path);
        }

        bool zstd = (header.IncompatibleFeatures & Qcow2Header.IncompatCompression) != 0 && header.CompressionType != CompressionType.Zlib;
        var refcounts = new RefcountEditor(handle, path, header, (ulong)RandomAccess.GetLength(handle));
        var tables = new HashSet<ulong>();
        byte[] l2 = new byte[cs];
        bool compressed = false;
        foreach (ulong[] l1 in AllL1Tables())
        {
            foreach (ulong l1Entry in l1)
            {
                ulong l2Offset = Qcow2Entries.HostOffset(l1Entry);
                if (l2Offset == 0 || !tables.Add(l2Offset))
                {
                    continue;
                }

                ReadL2(l2Offset, l2);
                ulong zeros = 0;
                for (ulong j = 0; j < header.L2Entries; j++)
                {
                    ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((int)(j * 8)));
                    compressed |= Qcow2Entries.IsCompressed(entry);
                    if (!Qcow2Entries.IsCompressed(entry) && Qcow2Entries.IsZero(entry))
                    {
                        zeros++;
                    }
                }

                if (zeros > 0)
                {
                    steps.ZeroTables[l2Offset] = refcounts.Get(l2Offset / cs);
                    steps.ZeroEntries += zeros;
                }
            }
        }

        if (zstd && compressed)
        {
            throw ImageAmender.NotPossible(path, "the image holds zstd-compressed clusters, which a version 2 image cannot read (qemu refuses this downgrade too).");
        }

        if (header.BackingFileOffset != 0 && header.CryptMethod != 0 && steps.ZeroEntries > 0)
        {
            // With a backing file a zero cluster needs a cluster of zeros; in an encrypted image that means encrypting them.
            throw ImageAmender.NotPossible(path, "the encrypted image has zero clusters over a backing file: version 2 would need encrypted clusters of zeros in their place, which amending does not write.");
        }
    }

    /// <summary>Every refcount must fit the narrower width (qemu: "Cannot decrease refcount entry width").</summary>
    private void CheckRefcountsFit(int newBits)
    {
        var refcounts = new RefcountEditor(handle, path, header, (ulong)RandomAccess.GetLength(handle));
        ulong max = newBits == 64 ? ulong.MaxValue : (1UL << newBits) - 1;
        for (ulong c = 0; c < refcounts.FreeStart; c++)
        {
            ulong value = refcounts.Get(c);
            if (value > max)
            {
                throw ImageAmender.NotPossible(path, $"cannot narrow refcounts to {newBits} bits: the cluster at 0x{c * cs:x} has a refcount of {value} (a snapshot shares it).");
            }
        }
    }

    private IEnumerable<ulong[]> AllL1Tables()
    {
        yield return references.ReadL1(header.L1TableOffset, header.L1Size);
        foreach (Qcow2SnapshotTable.Entry s in snapshots)
        {
            yield return references.ReadL1(s.Info.L1TableOffset, s.Info.L1Size);
        }
    }

    /// <summary>
    /// qemu's qcow2_upgrade: snapshots get the extra data version 3 requires (a snapshot table written anew, then
    /// switched to by the same write of cluster 0 that makes the image version 3).
    /// </summary>
    private Qcow2Header Upgrade(Qcow2Header current)
    {
        uint count = current.SnapshotCount;
        ulong tableOffset = current.SnapshotsOffset;
        ulong oldTableClusters = 0;
        RefcountEditor? refcounts = null;
        if (snapshots.Exists(NeedsExtraData))
        {
            List<byte[]> entries = snapshots.ConvertAll(s => WithV3ExtraData(s.Bytes, header.Size));
            refcounts = new RefcountEditor(handle, path, current, (ulong)RandomAccess.GetLength(handle));
            ulong clusters = Qcow2Layout.CeilDiv(Qcow2SnapshotTable.TableLength(entries), cs);
            RefcountEditor.Allocation allocation = refcounts.Allocate(clusters);
            refcounts.Commit(allocation);
            tableOffset = allocation.DataStart * cs;
            byte[] table = Qcow2SnapshotTable.Serialize(entries, cs);
            refcounts.Map.EnsureFree(tableOffset, (ulong)table.Length, Qcow2MetadataKind.None);
            ImageIo.Write(handle, table, tableOffset);
            ImageAmender.Flush(handle);
            oldTableClusters = Qcow2Layout.CeilDiv(Qcow2SnapshotTable.TableLength(snapshots.Select(s => s.Bytes)), cs);
        }

        WriteClusterZero(3, (count, tableOffset), current.CompatibleFeatures);
        if (refcounts is not null && oldTableClusters > 0)
        {
            // The header no longer points at the old table: freeing it now can at worst leak it.
            refcounts.Free(current.SnapshotsOffset / cs, oldTableClusters);
            ImageAmender.Flush(handle);
        }

        return ReadClusterZero().Header;
    }

    /// <summary>
    /// A snapshot entry with qemu's 24 bytes of extra data (64-bit VM state size, disk size, icount), each taken from
    /// the entry's own extra data when it has it; as qemu reads a v2 entry, the disk size defaults to the image's size
    /// and icount to -1.
    /// </summary>
    internal static byte[] WithV3ExtraData(byte[] entry, ulong diskSize)
    {
        uint extra = ExtraDataSize(entry);
        if (extra >= 24)
        {
            return entry;
        }

        ReadOnlySpan<byte> e = entry;
        ulong vmState = extra >= 8 ? BinaryPrimitives.ReadUInt64BigEndian(e[40..]) : BinaryPrimitives.ReadUInt32BigEndian(e[32..]);
        ulong disk = extra >= 16 ? BinaryPrimitives.ReadUInt64BigEndian(e[48..]) : diskSize;
        byte[] result = new byte[entry.Length - (int)extra + 24];
        e[..40].CopyTo(result);
        BinaryPrimitives.WriteUInt32BigEndian(result.AsSpan(36), 24);
        BinaryPrimitives.WriteUInt64BigEndian(result.AsSpan(40), vmState);
        BinaryPrimitives.WriteUInt64BigEndian(result.AsSpan(48), disk);
        BinaryPrimitives.WriteInt64BigEndian(result.AsSpan(56), -1);
        e[(40 + (int)extra)..].CopyTo(result.AsSpan(64));
        return result;
    }

    /// <summary>
    /// qemu's qcow2_change_refcount_order: refcount blocks of the new width and a table for them, placed past
    /// everything in use and counting themselves (the old structures counted as free, for the moment the header
    /// switches), flushed; then one write of the header (table offset, its clusters, the refcount order).
    /// </summary>
    private Qcow2Header ChangeRefcountWidth(Qcow2Header current, int newBits, CancellationToken cancellationToken)
    {
        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        var old = new RefcountEditor(handle, path, current, fileLength);
        var oldStructures = new HashSet<ulong>();
        for (ulong c = 0; c < current.RefcountTableClusters; c++)
        {
            oldStructures.Add((current.RefcountTableOffset / cs) + c);
        }

        byte[] oldTable = ImageIo.ReadBytes(handle, current.RefcountTableOffset, (int)(current.RefcountTableClusters * cs), path);
        for (int i = 0; i + 8 <= oldTable.Length; i += 8)
        {
            ulong oldBlock = Qcow2Entries.RefcountBlockOffset(BinaryPrimitives.ReadUInt64BigEndian(oldTable.AsSpan(i)));
            if (oldBlock != 0)
            {
                oldStructures.Add(oldBlock / cs);
            }
        }

        ulong start = old.FreeStart;
        ulong perBlock = Qcow2Entries.RefcountsPerBlock((uint)cs, newBits);
        (ulong blocks, ulong tableClusters) = Qcow2Layout.RefcountStructure(start, perBlock, cs);
        if (tableClusters * cs > Qcow2Header.MaxRefcountTableBytes)
        {
            throw ImageAmender.NotPossible(path, "the refcount table of the new width would exceed qemu's 8 MiB limit.");
        }

        ulong end = start + blocks + tableClusters;
        old.Map.EnsureFree(start * cs, (blocks + tableClusters) * cs, Qcow2MetadataKind.None);
        byte[] table = new byte[tableClusters * cs];
        byte[] block = new byte[cs];
        for (ulong b = 0; b < blocks; b++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Array.Clear(block);
            for (ulong k = 0; k < perBlock; k++)
            {
                ulong c = (b * perBlock) + k;
                ulong value = c >= end ? 0 : c >= start ? 1 : oldStructures.Contains(c) ? 0 : old.Get(c);
                if (value != 0)
                {
                    Qcow2Entries.WriteRefcount(block, k, newBits, value);
                }
            }

            ulong offset = (start + b) * cs;
            ImageIo.Write(handle, block, offset);
            BinaryPrimitives.WriteUInt64BigEndian(table.AsSpan((int)(b * 8)), offset);
        }

        ulong tableOffset = (start + blocks) * cs;
        ImageIo.Write(handle, table, tableOffset);
        ImageAmender.Flush(handle);

        // qcow2.rst "Header": refcount_table_offset, refcount_table_clusters (48..59) and refcount_order (96..99) in one
        // write of bytes 48..99, the fields between rewritten as they are.
        byte[] fields = ImageIo.ReadBytes(handle, 48, 52, path);
        BinaryPrimitives.WriteUInt64BigEndian(fields, tableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(fields.AsSpan(8), (uint)tableClusters);
        BinaryPrimitives.WriteUInt32BigEndian(fields.AsSpan(48), (uint)BitOperations.Log2((uint)newBits));
        ImageIo.Write(handle, fields, 48);
        ImageAmender.Flush(handle);
        return ReadClusterZero().Header;
    }

    /// <summary>
    /// qemu's qcow2_expand_zero_clusters, without writing into clusters a snapshot may share: a zero cluster becomes an
    /// unallocated one (nothing below it), or a new cluster of zeros (a backing file below it would show through).
    /// A preallocated zero cluster gives its reference up afterwards.
    /// </summary>
    private void ExpandZeroClusters(Qcow2Header current, AmendSteps steps, CancellationToken cancellationToken)
    {
        if (steps.ZeroTables.Count == 0)
        {
            return;
        }

        bool backing = current.BackingFileOffset != 0;
        var refcounts = new RefcountEditor(handle, path, current, (ulong)RandomAccess.GetLength(handle));
        ulong newClusters = backing ? steps.ZeroEntries : 0;
        RefcountEditor.Allocation? allocation = newClusters > 0 ? refcounts.Allocate(newClusters) : null;
        var increments = new Dictionary<ulong, long>();
        var decrements = new Dictionary<ulong, long>();
        var rewritten = new List<(ulong Offset, byte[] Table)>();
        ulong next = allocation?.DataStart ?? 0;
        foreach ((ulong l2Offset, ulong sharers) in steps.ZeroTables.OrderBy(t => t.Key))
        {
            byte[] l2 = new byte[cs];
            ReadL2(l2Offset, l2);
            for (ulong j = 0; j < current.L2Entries; j++)
            {
                Span<byte> slot = l2.AsSpan((int)(j * 8), 8);
                ulong entry = BinaryPrimitives.ReadUInt64BigEndian(slot);
                if (Qcow2Entries.IsCompressed(entry) || !Qcow2Entries.IsZero(entry))
                {
                    continue;
                }

                // Each L1 table that references this L2 table references its clusters once (qemu's refcount rule).
                ulong old = Qcow2Entries.HostOffset(entry);
                if (old != 0)
                {
                    decrements[old / cs] = decrements.GetValueOrDefault(old / cs) - (long)sharers;
                }

                ulong replacement = 0;
                if (backing)
                {
                    ulong cluster = next++;
                    replacement = sharers == 1 ? Qcow2Entries.Owned(cluster * cs) : cluster * cs;
                    if (sharers > 1)
                    {
                        increments[cluster] = (long)sharers - 1;
                    }
                }

                BinaryPrimitives.WriteUInt64BigEndian(slot, replacement);
            }

            rewritten.Add((l2Offset, l2));
        }

        refcounts.Validate(decrements);
        cancellationToken.ThrowIfCancellationRequested();
        if (allocation is not null)
        {
            // New clusters lie past the end: the file grows over them, so they read as zeros without being written.
            refcounts.Commit(allocation, deferFlush: true);
            ulong end = (allocation.DataStart + allocation.DataClusters) * cs;
            if ((ulong)RandomAccess.GetLength(handle) < end)
            {
                RandomAccess.SetLength(handle, (long)end);
            }

            refcounts.Adjust(increments);
            ImageAmender.Flush(handle);
        }

        foreach ((ulong offset, byte[] table) in rewritten)
        {
            refcounts.Map.EnsureFree(offset, cs, Qcow2MetadataKind.ActiveL2);
            ImageIo.Write(handle, table, offset);
        }

        ImageAmender.Flush(handle);

        // Nothing points at the replaced clusters any more: dropping their references now can at worst leak them.
        refcounts.Adjust(decrements);
        ImageAmender.Flush(handle);
        ulong[] active = references.ReadL1(current.L1TableOffset, current.L1Size);
        references.Map = refcounts.Map;
        if (references.RebuildCopiedBits(active, refcounts))
        {
            references.WriteL1(active, current.L1TableOffset, wholeClusters: false);
        }

        ImageAmender.Flush(handle);
    }

    /// <summary>Cluster 0 as it is on disk now (an earlier step may have moved the refcount table), parsed.</summary>
    private (Qcow2Header Header, byte[] Bytes) ReadClusterZero()
    {
        ulong length = (ulong)RandomAccess.GetLength(handle);
        byte[] bytes = ImageIo.ReadBytes(handle, 0, (int)Math.Min(length, cs), path);
        return (Qcow2Header.Parse(bytes, length, path), bytes);
    }

    /// <summary>
    /// Rewrites the used part of cluster 0 in one write, as qemu's qcow2_update_header lays it out: the header of
    /// <paramref name="version"/> with the fields as they are on disk now (the snapshot table as
    /// <paramref name="snapshots"/> says, when given), the extensions kept from the old one (the feature-name table
    /// only in version 3, where qemu writes it), the end marker, then the backing file name. Flushed before and after.
    /// </summary>
    private void WriteClusterZero(int version, (uint Count, ulong Offset)? snapshots, ulong compatible)
    {
        ImageAmender.Flush(handle);
        (Qcow2Header current, byte[] old) = ReadClusterZero();
        ulong reftableOffset = current.RefcountTableOffset;
        uint reftableClusters = current.RefcountTableClusters;
        uint snapshotCount = snapshots?.Count ?? current.SnapshotCount;
        ulong snapshotsOffset = snapshots?.Offset ?? current.SnapshotsOffset;
        const ulong incompatible = 0, autoclear = 0;
        var extensions = new List<(uint Type, byte[] Data)>();
        int oldEnd = Qcow2BackingEditor.ReadExtensions(old, current, extensions);
        if (current.BackingFileOffset != 0)
        {
            oldEnd = Math.Max(oldEnd, (int)(current.BackingFileOffset + current.BackingFileSize));
        }

        extensions.RemoveAll(e => e.Type == Qcow2Header.ExtFeatureTable);
        if (version >= 3 && cs >= 8192)
        {
            // qemu's order: backing format, crypto header, data file, feature names, bitmaps.
            int at = extensions.FindLastIndex(e => e.Type is Qcow2Header.ExtBackingFormat or Qcow2Header.ExtCryptoHeader or Qcow2Header.ExtDataFile) + 1;
            extensions.Insert(at, (Qcow2Header.ExtFeatureTable, Qcow2ImageWriter.FeatureTable()));
        }

        int headerLength = version >= 3 ? Qcow2Header.V3HeaderLength : Qcow2Header.V2HeaderLength;
        int length = headerLength + extensions.Sum(e => 8 + ((e.Data.Length + 7) & ~7)) + 8;
        byte[]? name = current.BackingFileOffset == 0 ? null : old.AsSpan((int)current.BackingFileOffset, (int)current.BackingFileSize).ToArray();
        int nameOffset = length;
        length += name?.Length ?? 0;
        if ((ulong)length > cs)
        {
            throw ImageAmender.NotPossible(path, $"the header, its extensions and the backing file name ({length} bytes) do not fit in the first cluster.");
        }

        byte[] result = new byte[Math.Max(length, Math.Min(oldEnd, (int)cs))];
        old.AsSpan(0, Qcow2Header.V2HeaderLength).CopyTo(result);
        Span<byte> h = result;
        BinaryPrimitives.WriteUInt32BigEndian(h[4..], (uint)version);
        BinaryPrimitives.WriteUInt64BigEndian(h[8..], name is null ? 0 : (ulong)nameOffset);
        BinaryPrimitives.WriteUInt32BigEndian(h[16..], (uint)(name?.Length ?? 0));
        BinaryPrimitives.WriteUInt64BigEndian(h[48..], reftableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(h[56..], reftableClusters);
        BinaryPrimitives.WriteUInt32BigEndian(h[60..], snapshotCount);
        BinaryPrimitives.WriteUInt64BigEndian(h[64..], snapshotCount == 0 ? 0 : snapshotsOffset);
        if (version >= 3)
        {
            BinaryPrimitives.WriteUInt64BigEndian(h[72..], incompatible | (current.IncompatibleFeatures & Qcow2Header.IncompatCompression));
            BinaryPrimitives.WriteUInt64BigEndian(h[80..], compatible);
            BinaryPrimitives.WriteUInt64BigEndian(h[88..], autoclear | (current.AutoclearFeatures & Qcow2Header.AutoclearBitmaps));
            BinaryPrimitives.WriteUInt32BigEndian(h[96..], (uint)current.RefcountOrder);
            BinaryPrimitives.WriteUInt32BigEndian(h[100..], (uint)headerLength);
            h[104] = (current.IncompatibleFeatures & Qcow2Header.IncompatCompression) != 0 ? (byte)current.CompressionType : (byte)0;
        }

        int offset = headerLength;
        foreach ((uint type, byte[] data) in extensions)
        {
            BinaryPrimitives.WriteUInt32BigEndian(h[offset..], type);
            BinaryPrimitives.WriteUInt32BigEndian(h[(offset + 4)..], (uint)data.Length);
            data.CopyTo(result, offset + 8);
            offset += 8 + ((data.Length + 7) & ~7);
        }

        name?.CopyTo(result, nameOffset);
        ImageAmender.Flush(handle);
        ImageIo.Write(handle, result, 0);
        ImageAmender.Flush(handle);
    }

    private void ReadL2(ulong offset, byte[] buffer)
    {
        ulong length = (ulong)RandomAccess.GetLength(handle);
        if (offset % cs != 0 || offset > length || cs > length - offset)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, $"the L2 table at 0x{offset:x} is misaligned or lies past the end of the file.");
        }

        ImageIo.ReadExactly(handle, buffer, offset, path);
    }
}
