using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Qcow2.Snapshots;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// Writes guest data into an existing qcow2 image (v2 or v3) in place, as qemu's qcow2 driver does for a guest write.
/// Clusters the active L1 holds alone (refcount 1) are overwritten where they lie; every other write goes to newly
/// allocated clusters (copy on write of clusters and L2 tables shared with internal snapshots, compressed clusters,
/// zero and unallocated ones, whose partial parts are filled from the image's current guest view).
/// </summary>
/// <remarks>
/// Each batch follows qcow2.rst "Host cluster management" and qemu's ordering (block/qcow2-cluster.c): the new
/// clusters' refcounts (<see cref="RefcountEditor.Commit"/>), the data and any new L2 tables are written and made
/// durable by one flush before the L2 entries and L1 entries that point at them are written, and references to
/// replaced clusters are dropped only after those entries are durable. A crash at any point leaves a valid image that
/// can at worst leak clusters. A batch costs one flush, two when it replaces clusters.
/// The caller holds <see cref="ImageLock.AcquireForWrite"/> on the image.
/// </remarks>
public sealed class Qcow2DataWriter : IImageDataWriter
{
    /// <summary>Bytes of new cluster contents one metadata batch carries (bounds memory, amortises the flushes).</summary>
    private const ulong BatchBytes = 32UL * 1024 * 1024;

    /// <summary>L2 tables kept in memory before the cache is dropped (all cached tables are clean).</summary>
    private const long L2CacheBudget = 64L * 1024 * 1024;

    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly Qcow2Header header;
    private readonly ulong[] l1;
    private readonly RefcountEditor refcounts;
    private readonly Qcow2ClusterReferences references;
    private readonly BlockOpenOptions? backingOptions;
    private readonly Dictionary<ulong, byte[]> l2Cache = [];
    private readonly ulong clusterSize;
    private readonly ulong l2Entries;
    private readonly ulong batchClusters;
    private readonly WriteBehind writeBehind;
    private IBlockReader? backing;
    private bool backingOpened;

    // The last batch's link step (flush, then the entries that point at its new clusters), run at the start of the next
    // operation so that the device writes the batch out while the caller prepares the next one.
    private Action? pendingLink;
    private bool autoclearChecked;
    private bool broken;
    private bool disposed;

    private Qcow2DataWriter(SafeFileHandle handle, string path, Qcow2Header header, ulong[] l1, BlockOpenOptions? backingOptions)
    {
        this.handle = handle;
        this.path = path;
        this.header = header;
        this.l1 = l1;
        this.backingOptions = backingOptions;
        clusterSize = header.ClusterSize;
        l2Entries = header.L2Entries;
        batchClusters = Math.Max(1, BatchBytes / clusterSize);
        refcounts = new RefcountEditor(handle, path, header, (ulong)RandomAccess.GetLength(handle));
        writeBehind = new WriteBehind(handle);
        references = new Qcow2ClusterReferences(handle, path, header) { Map = refcounts.Map };
    }

    /// <summary>The image's virtual size in bytes.</summary>
    public long VirtualSize => (long)header.Size;

    /// <summary>The image's cluster size in bytes.</summary>
    public int ClusterSize => (int)clusterSize;

    /// <summary>Whether the image has a backing file (unallocated clusters read from it).</summary>
    public bool HasBackingFile => !string.IsNullOrEmpty(header.BackingFile);

    /// <summary>qcow2 version: 2 (compat 0.10) or 3 (compat 1.1).</summary>
    public int Version => header.Version;

    /// <summary>
    /// Opens an existing qcow2 (v2 or v3) for in-place writes of guest data. The caller already holds
    /// <see cref="ImageLock.AcquireForWrite"/> on the path. <paramref name="backingOptions"/> says how the image's own
    /// backing chain is opened (host path resolver, force-share) when a partial cluster must be filled from it.
    /// </summary>
    /// <exception cref="KvmStorageException">
    /// <c>UnsupportedImageFormat</c> (not qcow2), <c>ImageEncrypted</c>, <c>ExternalDataFileNotSupported</c>,
    /// <c>ImageDirty</c>, <c>ImageCorrupt</c>, <c>ExtendedL2NotWritable</c>, <c>PersistentBitmapsNotWritable</c>,
    /// and the inspector's errors for malformed headers.
    /// </exception>
    public static Qcow2DataWriter Open(string path, BlockOpenOptions? backingOptions = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = Path.GetFullPath(path);
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(fullPath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw ImageErrors.FromIo(fullPath, e);
        }

        try
        {
            ulong fileLength = (ulong)RandomAccess.GetLength(handle);
            byte[] head = ImageIo.ReadBytes(handle, 0, (int)Math.Min(64UL * 1024, fileLength), fullPath);
            if (!Qcow2Header.HasMagic(head))
            {
                throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedFormat, fullPath, "not a qcow2 image; only qcow2 images can be written in place.");
            }

            Qcow2Header header = Qcow2Reader.ReadHeader(handle, head, fileLength, fullPath);
            Refuse(header, fullPath);
            var references = new Qcow2ClusterReferences(handle, fullPath, header);
            ulong[] l1 = references.ReadL1(header.L1TableOffset, header.L1Size);
            return new Qcow2DataWriter(handle, fullPath, header, l1, backingOptions);
        }
        catch (IOException e)
        {
            handle.Dispose();
            throw ImageErrors.FromIo(fullPath, e);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Writes <paramref name="data"/> at <paramref name="guestOffset"/> (any offset and length within
    /// <see cref="VirtualSize"/>). Parts of clusters outside the range keep the image's current guest view.
    /// </summary>
    public void Write(long guestOffset, ReadOnlySpan<byte> data)
    {
        CheckUsable();
        CheckRange(guestOffset, data.Length);
        ulong offset = (ulong)guestOffset;
        ulong end = offset + (ulong)data.Length;
        try
        {
            // The caller's bytes are written straight from its buffer: no copy of the batch is made.
            ulong position = offset;
            while (position < end)
            {
                ulong batchEnd = Math.Min(end, ((position / clusterSize) + batchClusters) * clusterSize);
                WriteBatch(position, data.Slice((int)(position - offset), (int)(batchEnd - position)));
                position = batchEnd;
            }
        }
        catch (Exception e) when (Broke(e))
        {
            throw;
        }
        catch (IOException e)
        {
            throw WriteFailed(e);
        }
    }

    /// <summary>
    /// Makes [<paramref name="guestOffset"/>, +<paramref name="length"/>) read as zeros. Whole clusters get the v3 zero
    /// flag when a backing file exists (v2 stores zeros then), or are deallocated when there is none; the partial
    /// clusters at either end are written.
    /// </summary>
    public void WriteZeroes(long guestOffset, long length)
    {
        CheckUsable();
        CheckRange(guestOffset, length);
        ulong offset = (ulong)guestOffset;
        ulong end = offset + (ulong)length;
        Guard(() =>
        {
            // v2 has no zero flag: with a backing file, zeros must be stored.
            bool storeZeros = HasBackingFile && header.Version < 3;
            ulong position = offset;
            while (position < end)
            {
                ulong cluster = position / clusterSize;
                ulong clusterStart = cluster * clusterSize;
                ulong clusterEnd = Math.Min(clusterStart + clusterSize, header.Size);
                if (position != clusterStart || end < clusterEnd)
                {
                    // A partial cluster at either end keeps the rest of its current content.
                    ulong partEnd = Math.Min(end, clusterEnd);
                    WriteBatch(position, new byte[partEnd - position]);
                    position = partEnd;
                    continue;
                }

                // Whole clusters from here up to the last one the range covers (the image's last cluster may be short).
                ulong lastWhole = end >= header.Size ? Qcow2Layout.CeilDiv(header.Size, clusterSize) : end / clusterSize;
                if (storeZeros)
                {
                    ulong count = Math.Min(lastWhole - cluster, batchClusters);
                    ulong chunkEnd = Math.Min(end, (cluster + count) * clusterSize);
                    WriteBatch(position, new byte[chunkEnd - position]);
                    position = chunkEnd;
                }
                else
                {
                    ulong count = Math.Min(lastWhole - cluster, batchClusters * 16);
                    ZeroClusters(cluster, count);
                    position = Math.Min(end, (cluster + count) * clusterSize);
                }
            }
        });
    }

    /// <summary>
    /// Drops every mapping of the active L1 table: clusters only it referenced are freed (their space returned to the
    /// file system where it can punch holes), so the image reads through to its backing file (or as zeros). Internal
    /// snapshots keep their data. qemu-img commit's "empty the overlay".
    /// </summary>
    public void DiscardAll()
    {
        CheckUsable();
        Guard(() =>
        {
            CompletePendingLink();
            var decrements = new Dictionary<ulong, long>();
            references.AddReferences(l1, -1, decrements);
            if (decrements.Count == 0)
            {
                return;
            }

            refcounts.Validate(decrements);
            EnsureAutoclearCleared();

            // Zeroing entries in place is safe: any mix of old and zero entries is a valid table. The references are
            // gone (durably) before a single refcount drops.
            Array.Clear(l1);
            references.WriteL1(l1, header.L1TableOffset, wholeClusters: false);
            FlushCore();
            refcounts.Adjust(decrements);
            FlushCore();
            l2Cache.Clear();
            PunchFreedClusters(decrements.Keys);
        });
    }

    /// <summary>Makes everything written so far durable (fsync).</summary>
    public void Flush()
    {
        CheckUsable();
        Guard(() =>
        {
            CompletePendingLink();
            FlushCore();
        });
    }

    public void Dispose()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        try
        {
            if (!broken)
            {
                CompletePendingLink();
                FlushCore();
            }
        }
        catch (IOException)
        {
            // Dispose does not throw: callers that need durability call Flush first.
        }

        backing?.Dispose();
        handle.Dispose();
    }

    private static void Refuse(Qcow2Header header, string path)
    {
        if (header.CryptMethod != 0)
        {
            throw BlockErrors.NotSupported(BlockErrorIds.ImageEncrypted, path, "the image is encrypted; encrypted images cannot be written.");
        }

        if ((header.IncompatibleFeatures & Qcow2Header.IncompatDataFile) != 0)
        {
            throw BlockErrors.NotSupported(BlockErrorIds.ExternalDataFileNotSupported, path, "the image keeps its data in an external data file, which cannot be written in place.");
        }

        if (header.Dirty)
        {
            throw ImageErrors.Dirty(path);
        }

        if (header.Corrupt)
        {
            throw ImageErrors.MarkedCorrupt(path);
        }

        if (header.ExtendedL2)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.ExtendedL2NotWritable, path, "the image uses extended L2 entries (subclusters), which cannot be written in place yet; convert it without extended_l2 first.");
        }

        if (header.HasBitmaps)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.BitmapsNotWritable, path, "the image has persistent dirty bitmaps, which a write would leave stale; remove them first (qemu-img bitmap --remove).");
        }
    }

    private void CheckUsable()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (broken)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, ImageErrorIds.ImageWriteFailed, $"An earlier write to '{path}' failed; reopen the image to go on.", path);
        }
    }

    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || (ulong)offset > header.Size || (ulong)length > header.Size - (ulong)offset)
        {
            throw new KvmStorageException(
                ErrorKind.InvalidArgument,
                BlockErrorIds.RangeOutOfBounds,
                $"The range at {offset} (+{length} bytes) lies beyond the end of '{path}' ({header.Size} bytes).",
                path);
        }
    }

    /// <summary>Runs a write step; any failure leaves the in-memory tables untrusted, so the writer refuses further work.</summary>
    private void Guard(Action work)
    {
        try
        {
            work();
        }
        catch (Exception e) when (Broke(e))
        {
            throw;
        }
        catch (IOException e)
        {
            throw WriteFailed(e);
        }
    }

    /// <summary>Marks the writer broken; true (rethrow as is) for everything but an I/O error, which is wrapped.</summary>
    private bool Broke(Exception e)
    {
        broken = true;
        return e is not IOException;
    }

    private KvmStorageException WriteFailed(IOException e) =>
        new(ErrorKind.WriteError, ImageErrorIds.ImageWriteFailed, $"Writing to '{path}' failed: {e.Message}", path, e);

    /// <summary>One batch of guest data, at most <see cref="batchClusters"/> clusters.</summary>
    private void WriteBatch(ulong offset, ReadOnlySpan<byte> data)
    {
        // The plan below reads the tables: the previous batch's entries must be in them first.
        CompletePendingLink();
        var changes = new List<Change>();
        var inPlace = new List<InPlaceWrite>();
        ulong end = offset + (ulong)data.Length;
        ulong position = offset;
        while (position < end)
        {
            ulong cluster = position / clusterSize;
            ulong inCluster = position % clusterSize;
            ulong n = Math.Min(clusterSize - inCluster, end - position);
            ReadOnlySpan<byte> part = data.Slice((int)(position - offset), (int)n);
            ulong entry = Entry(cluster);
            ulong host = Qcow2Entries.HostOffset(entry);
            bool standard = !Qcow2Entries.IsCompressed(entry) && !Qcow2Entries.IsZero(entry) && host != 0;
            if (standard && refcounts.Get(host / clusterSize) == 1 && TableOwned(cluster / l2Entries))
            {
                // The active table holds this cluster alone: overwrite it where it lies (no metadata changes).
                CheckDataCluster(host);
                inPlace.Add(new InPlaceWrite(host + inCluster, (int)(position - offset), (int)n));
            }
            else if (n == clusterSize)
            {
                // A whole cluster goes to its new place straight from the caller's buffer.
                changes.Add(new Change(cluster, null, 0, (int)(position - offset)));
            }
            else
            {
                byte[] content = new byte[clusterSize];
                ReadCurrent(cluster, entry, content);
                part.CopyTo(content.AsSpan((int)inCluster));
                changes.Add(new Change(cluster, content, 0));
            }

            position += n;
        }

        Apply(changes, inPlace, data, deferLink: true);
    }

    /// <summary>Whole clusters [first, first + count) read as zeros afterwards.</summary>
    private void ZeroClusters(ulong first, ulong count)
    {
        CompletePendingLink();
        ulong wanted = HasBackingFile ? Qcow2Entries.ZeroFlag : 0;
        var changes = new List<Change>();
        for (ulong c = first; c < first + count; c++)
        {
            ulong l1Index = c / l2Entries;
            if (Qcow2Entries.HostOffset(l1[l1Index]) == 0)
            {
                if (wanted == 0)
                {
                    // No L2 table: the whole span is unallocated already.
                    c = ((l1Index + 1) * l2Entries) - 1;
                    continue;
                }
            }

            ulong entry = Qcow2Entries.WithCopied(Entry(c), false);
            if (entry == wanted)
            {
                continue;
            }

            changes.Add(new Change(c, null, wanted));
            if ((ulong)changes.Count >= batchClusters * 16)
            {
                Apply(changes);
                changes.Clear();
            }
        }

        Apply(changes);
    }

    /// <summary>
    /// Applies a batch of L2 entry changes: new clusters for <see cref="Change.Content"/>, else the entry
    /// <see cref="Change.NewEntry"/>; L2 tables that are missing or shared get new clusters first.
    /// </summary>
    private void Apply(List<Change> changes, List<InPlaceWrite>? inPlace = null, ReadOnlySpan<byte> source = default, bool deferLink = false)
    {
        Qcow2MetadataMap map = refcounts.Map;
        if (changes.Count == 0)
        {
            // qemu's overlap check: every target of the step is checked before its first write.
            inPlace?.ForEach(w => map.EnsureFree(w.Host, (ulong)w.Length, Qcow2MetadataKind.None));
            WriteInPlace(inPlace, source);
            return;
        }

        // Plan everything before the first write, so a refusal (an impossible refcount) changes nothing.
        var tables = new SortedDictionary<ulong, TablePlan>();
        foreach (Change change in changes)
        {
            ulong l1Index = change.Cluster / l2Entries;
            if (!tables.ContainsKey(l1Index))
            {
                ulong oldTable = Qcow2Entries.HostOffset(l1[l1Index]);
                bool owned = oldTable != 0 && refcounts.Get(oldTable / clusterSize) == 1;
                tables[l1Index] = new TablePlan(oldTable, owned);
            }
        }

        ulong newTables = (ulong)tables.Values.Count(t => !t.Owned);
        ulong newData = (ulong)changes.Count(c => c.HasContent);
        var decrements = new Dictionary<ulong, long>();
        ulong next = 0;
        RefcountEditor.Allocation? allocation = null;
        if (newTables + newData > 0)
        {
            allocation = refcounts.Allocate(newTables + newData);
            next = allocation.DataStart;
        }

        foreach ((ulong _, TablePlan plan) in tables)
        {
            if (plan.Owned)
            {
                plan.Table = LoadL2(plan.OldOffset);
                continue;
            }

            plan.NewOffset = next++ * clusterSize;
            if (plan.OldOffset == 0)
            {
                plan.Table = new byte[clusterSize];
            }
            else
            {
                // Copy on write of an L2 table shared with a snapshot: the data clusters keep their counts (each L1 that
                // reaches them counts once, qemu's qcow2_update_snapshot_refcount); the old table loses one reference.
                plan.Table = (byte[])LoadL2(plan.OldOffset).Clone();
                RecomputeCopiedBits(plan.Table);
                Add(decrements, plan.OldOffset / clusterSize, -1);
            }
        }

        var dataWrites = new List<DataWrite>();
        foreach (Change change in changes)
        {
            TablePlan plan = tables[change.Cluster / l2Entries];
            int slot = (int)(change.Cluster % l2Entries) * 8;
            ulong old = BinaryPrimitives.ReadUInt64BigEndian(plan.Table!.AsSpan(slot));
            Release(old, decrements);
            ulong updated = change.NewEntry;
            if (change.HasContent)
            {
                ulong host = next++ * clusterSize;
                dataWrites.Add(new DataWrite(host, change.Content, change.SourceStart));
                updated = Qcow2Entries.Owned(host);
            }

            BinaryPrimitives.WriteUInt64BigEndian(plan.Table.AsSpan(slot), updated);
            plan.Dirty = true;
        }

        refcounts.Validate(decrements);

        // qemu's overlap check (qcow2_pre_write_overlap_check), for every target of this step before its first write:
        // guest data and new L2 tables may land on no metadata, an L2 table rewritten in place only on an active L2
        // table, an L1 entry only on the active L1 table. The refcount editor checks its own writes the same way.
        inPlace?.ForEach(w => map.EnsureFree(w.Host, (ulong)w.Length, Qcow2MetadataKind.None));
        dataWrites.ForEach(w => map.EnsureFree(w.Host, clusterSize, Qcow2MetadataKind.None));
        foreach ((ulong l1Index, TablePlan plan) in tables)
        {
            if (!plan.Owned)
            {
                map.EnsureFree(plan.NewOffset, clusterSize, Qcow2MetadataKind.None);
                map.EnsureFree(header.L1TableOffset + (l1Index * 8), 8, Qcow2MetadataKind.ActiveL1);
            }
            else if (plan.Dirty)
            {
                map.EnsureFree(plan.OldOffset, clusterSize, Qcow2MetadataKind.ActiveL2);
            }
        }

        EnsureAutoclearCleared();

        // 1. qcow2.rst "Host cluster management": the new clusters' refcounts are durable before anything points at
        //    them. They are written first and made durable by the flush of step 2, which precedes every entry.
        if (allocation is not null)
        {
            refcounts.Commit(allocation, deferFlush: true);
        }

        // 2. Data and new L2 tables (nothing references them yet), then one flush: refcounts, data and tables are all
        //    durable before any entry points at them (qemu's qcow2_alloc_cluster_link_l2 runs after the data write
        //    completes).
        WriteInPlace(inPlace, source);
        WriteData(dataWrites, source);
        foreach (TablePlan plan in tables.Values.Where(t => !t.Owned))
        {
            ImageIo.Write(handle, plan.Table, plan.NewOffset);
            map.Add(Qcow2MetadataKind.ActiveL2, plan.NewOffset, clusterSize);
        }

        writeBehind.Kick();

        // 3. and 4. With deferLink they wait for the writer's next step (CompletePendingLink): the flush then finds the
        //    batch mostly written out while the caller prepared its next data. Nothing reads the tables in between.
        if (deferLink)
        {
            pendingLink = () => Link(tables, decrements);
        }
        else
        {
            Link(tables, decrements);
        }
    }

    /// <summary>Runs the last batch's link step, if one is pending.</summary>
    private void CompletePendingLink()
    {
        if (pendingLink is { } link)
        {
            pendingLink = null;
            link();
        }
    }

    /// <summary>Steps 3 and 4 of a batch: after one flush, the entries that point at the new clusters; then the decrements.</summary>
    private void Link(SortedDictionary<ulong, TablePlan> tables, Dictionary<ulong, long> decrements)
    {
        Qcow2MetadataMap map = refcounts.Map;
        FlushCore();

        // 3. The entries: changed L2 tables the active L1 owns, then L1 entries switching to the new tables.
        foreach (TablePlan plan in tables.Values.Where(t => t.Owned && t.Dirty))
        {
            ImageIo.Write(handle, plan.Table, plan.OldOffset);
        }

        byte[] l1Entry = new byte[8];
        foreach ((ulong l1Index, TablePlan plan) in tables.Where(t => !t.Value.Owned))
        {
            l1[l1Index] = Qcow2Entries.Owned(plan.NewOffset);
            BinaryPrimitives.WriteUInt64BigEndian(l1Entry, l1[l1Index]);
            ImageIo.Write(handle, l1Entry, header.L1TableOffset + (l1Index * 8));
            CacheL2(plan.NewOffset, plan.Table!);

            // The old table (if any) is a snapshot's now: qemu's default check does not track inactive L2 tables.
            map.Remove(Qcow2MetadataKind.ActiveL2, plan.OldOffset, plan.OldOffset == 0 ? 0 : clusterSize);
        }

        // 4. Only once the entries are durable are the replaced clusters unreferenced: dropping them earlier could free
        //    clusters still in use. Without replaced clusters the entries need no flush of their own: old or new, either
        //    state of each entry points at durable clusters; the next step's flush (or the caller's Flush) covers them.
        if (decrements.Count > 0)
        {
            FlushCore();
            refcounts.Adjust(decrements);
        }
    }

    private void WriteInPlace(List<InPlaceWrite>? writes, ReadOnlySpan<byte> source)
    {
        foreach (InPlaceWrite w in writes ?? [])
        {
            ImageIo.Write(handle, source.Slice(w.Start, w.Length), w.Host);
        }
    }

    private void WriteData(List<DataWrite> writes, ReadOnlySpan<byte> source)
    {
        int i = 0;
        int cluster = (int)clusterSize;
        while (i < writes.Count)
        {
            DataWrite first = writes[i];
            if (first.Content is not null)
            {
                ImageIo.Write(handle, first.Content, first.Host);
                i++;
                continue;
            }

            // Consecutive whole clusters that lie back to back in the caller's buffer go out in one write.
            int j = i + 1;
            while (j < writes.Count && writes[j].Content is null && writes[j].Host == writes[j - 1].Host + clusterSize
                && writes[j].SourceStart == writes[j - 1].SourceStart + cluster)
            {
                j++;
            }

            ImageIo.Write(handle, source.Slice(first.SourceStart, (j - i) * cluster), first.Host);
            i = j;
        }
    }

    /// <summary>Adds the decrements that dropping an L2 entry causes (standard, zero with an offset, or compressed).</summary>
    private void Release(ulong entry, Dictionary<ulong, long> decrements)
    {
        if (Qcow2Entries.IsCompressed(entry))
        {
            (ulong first, ulong last) = references.CompressedClusters(entry);
            for (ulong c = first; c <= last; c++)
            {
                Add(decrements, c, -1);
            }

            return;
        }

        ulong host = Qcow2Entries.HostOffset(entry);
        if (host != 0)
        {
            Add(decrements, host / clusterSize, -1);
        }
    }

    private void RecomputeCopiedBits(byte[] table)
    {
        for (int slot = 0; slot < table.Length; slot += 8)
        {
            ulong entry = BinaryPrimitives.ReadUInt64BigEndian(table.AsSpan(slot));
            ulong host = Qcow2Entries.HostOffset(entry);
            if (Qcow2Entries.IsCompressed(entry) || host == 0)
            {
                continue;
            }

            ulong updated = Qcow2Entries.WithCopied(entry, refcounts.Get(host / clusterSize) == 1);
            BinaryPrimitives.WriteUInt64BigEndian(table.AsSpan(slot), updated);
        }
    }

    private bool TableOwned(ulong l1Index)
    {
        ulong table = Qcow2Entries.HostOffset(l1[l1Index]);
        return table != 0 && refcounts.Get(table / clusterSize) == 1;
    }

    /// <summary>The L2 entry of a guest cluster (0 when its L2 table does not exist).</summary>
    private ulong Entry(ulong cluster)
    {
        ulong table = Qcow2Entries.HostOffset(l1[cluster / l2Entries]);
        return table == 0 ? 0 : BinaryPrimitives.ReadUInt64BigEndian(LoadL2(table).AsSpan((int)(cluster % l2Entries) * 8));
    }

    /// <summary>Fills <paramref name="content"/> with what the guest currently reads in a cluster.</summary>
    private void ReadCurrent(ulong cluster, ulong entry, byte[] content)
    {
        ulong host = Qcow2Entries.HostOffset(entry);
        if (Qcow2Entries.IsCompressed(entry))
        {
            Decompress(entry, content);
        }
        else if (Qcow2Entries.IsZero(entry))
        {
            Array.Clear(content);
        }
        else if (host != 0)
        {
            CheckDataCluster(host);
            ReadData(host, content);
        }
        else
        {
            ReadBacking(cluster * clusterSize, content);
        }
    }

    private void ReadBacking(ulong offset, byte[] content)
    {
        Array.Clear(content);
        IBlockReader? reader = Backing();
        ulong limit = Math.Min(header.Size, reader?.Size ?? 0);
        if (reader is null || offset >= limit)
        {
            return;
        }

        reader.Read(offset, content.AsSpan(0, (int)Math.Min(clusterSize, limit - offset)));
    }

    private IBlockReader? Backing()
    {
        if (!backingOpened)
        {
            backingOpened = true;
            if (HasBackingFile)
            {
                string backingPath = ImageInspector.ResolveCheckedBackingPath(path, header.BackingFile!, backingOptions?.BackingRule);
                backing = BlockReaders.Open(backingPath, new BlockOpenOptions
                {
                    Format = ImageFormats.TryParse(header.BackingFormat, out ImageFormat format) ? format : null,
                    ForceShare = backingOptions?.ForceShare ?? false,
                    BackingRule = backingOptions?.BackingRule,
                });
            }
        }

        return backing;
    }

    private void Decompress(ulong entry, byte[] content)
    {
        var compressed = new Qcow2Entries.CompressedDescriptor(header.ClusterBits);
        ulong coffset = compressed.HostOffset(entry);
        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        if (coffset == 0 || coffset >= fileLength)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, $"a compressed cluster lies at 0x{coffset:x}, outside the file.");
        }

        int length = (int)Math.Min(compressed.Length(entry), fileLength - coffset);
        byte[] input = new byte[length];
        ImageIo.ReadExactly(handle, input, coffset, path);
        int produced = Decompression.Decompress(Decompression.For(header.CompressionType), input, length, content, path);
        if (produced != content.Length)
        {
            throw Decompression.Short(path, coffset, produced, content.Length);
        }
    }

    /// <summary>Reads a data cluster; bytes past the end of the file read as zeros (qemu's protocol layer).</summary>
    private void ReadData(ulong host, byte[] content) => PositionalFile.ReadZeroPadded(handle, content, host);

    private byte[] LoadL2(ulong offset)
    {
        if (l2Cache.TryGetValue(offset, out byte[]? table))
        {
            return table;
        }

        Qcow2Resizer.CheckCluster(offset, clusterSize, handle, path);
        table = ImageIo.ReadBytes(handle, offset, (int)clusterSize, path);
        CacheL2(offset, table);
        return table;
    }

    private void CacheL2(ulong offset, byte[] table)
    {
        if ((long)(l2Cache.Count + 1) * (long)clusterSize > L2CacheBudget)
        {
            l2Cache.Clear();
        }

        l2Cache[offset] = table;
    }

    private void CheckDataCluster(ulong host)
    {
        if (host % clusterSize != 0)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, $"an L2 entry points at the unaligned host offset 0x{host:x}.");
        }
    }

    /// <summary>qcow2.rst "Header": a writer must clear the autoclear bits it does not know before changing the image.</summary>
    private void EnsureAutoclearCleared()
    {
        if (autoclearChecked)
        {
            return;
        }

        const ulong known = Qcow2Header.AutoclearBitmaps | Qcow2Header.AutoclearDataFileRaw;
        if (header.Version >= 3 && (header.AutoclearFeatures & ~known) != 0)
        {
            byte[] field = new byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(field, header.AutoclearFeatures & known);
            ImageIo.Write(handle, field, 88);
            FlushCore();
        }

        autoclearChecked = true;
    }

    /// <summary>Gives the space of clusters whose refcount dropped to 0 back to the file system (best effort).</summary>
    private void PunchFreedClusters(IEnumerable<ulong> clusters)
    {
        // Runs of adjacent clusters go in one call: punching is slow per call on some file systems.
        ulong start = 0, count = 0;
        foreach (ulong c in clusters.Where(c => c > 0 && refcounts.Get(c) == 0).Order())
        {
            if (count > 0 && c == start + count)
            {
                count++;
                continue;
            }

            Punch(start, count);
            start = c;
            count = 1;
        }

        Punch(start, count);
    }

    private void Punch(ulong first, ulong count)
    {
        if (count > 0)
        {
            _ = PositionalFile.TryPunchHole(handle, first * clusterSize, count * clusterSize);
        }
    }

    private void FlushCore() => PositionalFile.Flush(handle);

    private static void Add(Dictionary<ulong, long> deltas, ulong cluster, long addend) =>
        deltas[cluster] = deltas.GetValueOrDefault(cluster) + addend;

    /// <summary>
    /// One L2 entry to change: a new cluster holding <see cref="Content"/> (a partial cluster completed in memory) or the
    /// whole cluster at <see cref="SourceStart"/> of the batch's buffer; else the entry becomes <see cref="NewEntry"/>.
    /// </summary>
    private readonly record struct Change(ulong Cluster, byte[]? Content, ulong NewEntry, int SourceStart = -1)
    {
        public bool HasContent => Content is not null || SourceStart >= 0;
    }

    /// <summary>A new data cluster at <see cref="Host"/>: <see cref="Content"/>, or the batch buffer's cluster at <see cref="SourceStart"/>.</summary>
    private readonly record struct DataWrite(ulong Host, byte[]? Content, int SourceStart);

    /// <summary>Guest data overwriting a cluster the active L1 holds alone: <see cref="Length"/> bytes of the batch from <see cref="Start"/>.</summary>
    private readonly record struct InPlaceWrite(ulong Host, int Start, int Length);

    private sealed class TablePlan(ulong oldOffset, bool owned)
    {
        public ulong OldOffset { get; } = oldOffset;

        public bool Owned { get; } = owned;

        public ulong NewOffset { get; set; }

        public byte[]? Table { get; set; }

        public bool Dirty { get; set; }
    }
}
