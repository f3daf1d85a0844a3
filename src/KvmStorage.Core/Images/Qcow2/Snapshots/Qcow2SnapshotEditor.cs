using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using KvmStorage.Core.Names;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2.Snapshots;

/// <summary>
/// Creates, reverts to and deletes internal snapshots of a qcow2 image opened for writing (the caller holds
/// the write lock). Everything that can be refused is checked before the first write; after that, each step
/// follows qcow2.rst "Host cluster management": refcounts go up and are flushed before anything new points at
/// a cluster, the header switches tables in one write of its first sector, and references are dropped only
/// afterwards, so a crash at any point leaves a valid image that can at worst leak clusters.
/// </summary>
internal sealed class Qcow2SnapshotEditor
{
    /// <summary>qemu's QCOW_MAX_SNAPSHOTS_SIZE.</summary>
    private const ulong MaxTableBytes = 64UL * 1024 * 1024;

    /// <summary>qemu-img copies names into QEMUSnapshotInfo.name[256]: longer ones would be cut.</summary>
    private const int MaxNameBytes = 255;

    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly byte[] head;
    private readonly Qcow2Header header;
    private readonly List<Qcow2SnapshotTable.Entry> entries;
    private readonly Qcow2ClusterReferences references;
    private readonly ulong clusterSize;

    private Qcow2SnapshotEditor(SafeFileHandle handle, string path, byte[] head, Qcow2Header header, List<Qcow2SnapshotTable.Entry> entries)
    {
        this.handle = handle;
        this.path = path;
        this.head = head;
        this.header = header;
        this.entries = entries;
        references = new Qcow2ClusterReferences(handle, path, header);
        clusterSize = header.ClusterSize;
    }

    public IReadOnlyList<SnapshotInfo> Snapshots => entries.ConvertAll(e => e.Info);

    /// <summary>Reads the header and snapshot table, refusing images whose refcounts cannot be trusted or that cannot hold snapshots.</summary>
    public static Qcow2SnapshotEditor Open(SafeFileHandle handle, string path)
    {
        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        byte[] head = ImageIo.ReadBytes(handle, 0, (int)Math.Min(64UL * 1024, fileLength), path);
        Qcow2Header header = Qcow2Reader.ReadHeader(handle, head, fileLength, path);
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
            throw ImageErrors.NotSupported(ImageErrorIds.SnapshotsNotSupported, path, "an image with an external data file cannot have internal snapshots.");
        }

        return new Qcow2SnapshotEditor(handle, path, head, header, Qcow2SnapshotTable.ReadEntries(handle, header, fileLength, path));
    }

    /// <summary>Finds a snapshot as qemu-img does for <paramref name="lookup"/> IdOrName: by id first, then by name.</summary>
    public SnapshotInfo Find(string snapshot, SnapshotLookup lookup)
    {
        SnapshotInfo? byId = lookup is SnapshotLookup.Id or SnapshotLookup.IdOrName ? entries.Find(e => e.Info.Id == snapshot)?.Info : null;
        SnapshotInfo? found = byId ?? (lookup is SnapshotLookup.Name or SnapshotLookup.IdOrName ? entries.Find(e => e.Info.Name == snapshot)?.Info : null);
        string what = lookup switch
        {
            SnapshotLookup.Id => "with id",
            SnapshotLookup.Name => "named",
            _ => "with id or name",
        };
        return found ?? throw new KvmStorageException(ErrorKind.NotFound, ImageErrorIds.SnapshotNotFound, $"'{path}' has no snapshot {what} '{snapshot}'.", snapshot);
    }

    /// <summary>qemu's <c>qcow2_snapshot_create</c> for a disk-only snapshot, with qemu's next id (largest numeric id + 1).</summary>
    public SnapshotInfo Create(string name, DateTimeOffset date)
    {
        ValidateName(name);
        if (entries.Exists(e => e.Info.Name == name))
        {
            throw new KvmStorageException(ErrorKind.AlreadyExists, ImageErrorIds.SnapshotNameExists, $"'{path}' already has a snapshot named '{name}'.", name);
        }

        if (entries.Count >= Qcow2Header.MaxSnapshots)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, ImageErrorIds.SnapshotLimitReached, $"'{path}' already has {entries.Count} snapshots, qemu's limit.", path);
        }

        string id = NextId();
        ulong[] active = references.ReadL1(header.L1TableOffset, header.L1Size);
        var increments = new Dictionary<ulong, long>();
        references.AddReferences(active, 1, increments);
        var refcounts = new RefcountEditor(handle, path, header, (ulong)RandomAccess.GetLength(handle));
        references.Map = refcounts.Map;
        refcounts.Validate(increments);

        ulong l1Clusters = references.L1Clusters(header.L1Size);
        long unixTicks = date.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
        uint seconds = (uint)(unixTicks / TimeSpan.TicksPerSecond);
        uint nanoseconds = (uint)(unixTicks % TimeSpan.TicksPerSecond * 100);

        // The new entry's L1 offset is known only after allocation; its length is not, so size the table now.
        byte[] probe = Qcow2SnapshotTable.Encode(0, header.L1Size, id, name, seconds, nanoseconds, 0, header.Size, -1);
        List<byte[]> newEntries = [.. entries.Select(e => e.Bytes), probe];
        ulong tableLength = Qcow2SnapshotTable.TableLength(newEntries);
        if (tableLength > MaxTableBytes)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, ImageErrorIds.SnapshotLimitReached, $"'{path}': the snapshot table would exceed qemu's 64 MiB limit.", path);
        }

        ulong tableClusters = Qcow2Layout.CeilDiv(tableLength, clusterSize);
        RefcountEditor.Allocation allocation = refcounts.Allocate(l1Clusters + tableClusters);

        // Nothing was written so far: every refusal above leaves the image as it was.
        ClearUnknownAutoclearBits();
        refcounts.Commit(allocation);
        ulong l1Offset = header.L1Size == 0 ? 0 : allocation.DataStart * clusterSize;
        ulong tableOffset = (allocation.DataStart + l1Clusters) * clusterSize;

        // The copy's copied flags are cleared: once the refcounts below are raised, every cluster is shared.
        if (header.L1Size > 0)
        {
            references.WriteL1([.. active.Select(e => Qcow2Entries.WithCopied(e, false))], l1Offset, wholeClusters: true);
        }

        newEntries[^1] = Qcow2SnapshotTable.Encode(l1Offset, header.L1Size, id, name, seconds, nanoseconds, 0, header.Size, -1);
        WriteTable(refcounts.Map, Qcow2SnapshotTable.Serialize(newEntries, clusterSize), tableOffset);
        refcounts.Adjust(increments);
        PositionalFile.Flush(handle);

        // qcow2.rst "Snapshots": a write must COW once a cluster is shared, so the active tables lose their copied
        // flags before the snapshot becomes visible.
        if (references.RebuildCopiedBits(active, refcounts))
        {
            references.WriteL1(active, header.L1TableOffset, wholeClusters: false);
        }

        PositionalFile.Flush(handle);
        SwitchSnapshotTable(newEntries.Count, tableOffset, refcounts);
        return Qcow2SnapshotTable.ReadEntries(handle, Reread(), (ulong)RandomAccess.GetLength(handle), path)[^1].Info;
    }

    /// <summary>
    /// qemu's <c>qcow2_snapshot_goto</c>: the active L1 becomes a copy of the snapshot's and the virtual size the
    /// snapshot's disk size. Unlike qemu, which overwrites the active L1 in place, the copy goes to new clusters and
    /// the header switches to it (size, L1 size and offset in one write), so a crash leaves either state whole.
    /// </summary>
    public void Revert(SnapshotInfo snapshot)
    {
        if (header.HasBitmaps)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, "reverting an image with persistent dirty bitmaps would leave the bitmaps wrong.");
        }

        ulong newSize = snapshot.DiskSize ?? header.Size;
        ulong[] target = references.ReadL1(snapshot.L1TableOffset, snapshot.L1Size);
        ulong newL1Size = Math.Max(snapshot.L1Size, Qcow2Header.L1EntriesFor(newSize, header.L2Span));
        if (newL1Size * 8 > Qcow2Header.MaxL1Bytes)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidSnapshotTable, path, $"snapshot '{snapshot.Name}' records a disk size of {newSize} bytes, too large for an L1 table.");
        }

        ulong[] active = references.ReadL1(header.L1TableOffset, header.L1Size);
        var increments = new Dictionary<ulong, long>();
        references.AddReferences(target, 1, increments);
        var decrements = new Dictionary<ulong, long>();
        references.AddReferences(active, -1, decrements);
        var refcounts = new RefcountEditor(handle, path, header, (ulong)RandomAccess.GetLength(handle));
        references.Map = refcounts.Map;
        refcounts.Validate(increments);
        refcounts.Validate(decrements);
        ulong l1Clusters = references.L1Clusters(newL1Size);
        RefcountEditor.Allocation allocation = refcounts.Allocate(l1Clusters);

        // Nothing was written so far: every refusal above leaves the image as it was.
        ClearUnknownAutoclearBits();
        refcounts.Commit(allocation);
        refcounts.Adjust(increments);
        PositionalFile.Flush(handle);

        // Every cluster of the snapshot is now shared by it and the new active table: the snapshot's L2 tables lose
        // their (possibly stale) copied flags before the header can expose them as active.
        ulong[] newActive = new ulong[newL1Size];
        Array.Copy(target, newActive, target.Length);
        references.RebuildCopiedBits(newActive, refcounts);
        ulong newL1Offset = newL1Size == 0 ? 0 : allocation.DataStart * clusterSize;
        if (newL1Size > 0)
        {
            references.WriteL1(newActive, newL1Offset, wholeClusters: true);
        }

        PositionalFile.Flush(handle);
        WriteSizeAndL1(newSize, (uint)newL1Size, newL1Offset);
        PositionalFile.Flush(handle);

        // The old active table is unreferenced only now: dropping its references earlier could free clusters in use.
        refcounts.Adjust(decrements);
        if (header.L1Size > 0)
        {
            refcounts.Free(header.L1TableOffset / clusterSize, references.L1Clusters(header.L1Size));
        }

        PositionalFile.Flush(handle);
        if (references.RebuildCopiedBits(newActive, refcounts))
        {
            references.WriteL1(newActive, newL1Offset, wholeClusters: false);
        }

        PositionalFile.Flush(handle);
    }

    /// <summary>qemu's <c>qcow2_snapshot_delete</c>: the entry goes first (new table), then the snapshot's references.</summary>
    public void Delete(SnapshotInfo snapshot)
    {
        ulong[] target = references.ReadL1(snapshot.L1TableOffset, snapshot.L1Size);
        var decrements = new Dictionary<ulong, long>();
        references.AddReferences(target, -1, decrements);
        for (ulong c = 0; snapshot.L1Size > 0 && c < references.L1Clusters(snapshot.L1Size); c++)
        {
            decrements[(snapshot.L1TableOffset / clusterSize) + c] = decrements.GetValueOrDefault((snapshot.L1TableOffset / clusterSize) + c) - 1;
        }

        var refcounts = new RefcountEditor(handle, path, header, (ulong)RandomAccess.GetLength(handle));
        references.Map = refcounts.Map;
        refcounts.Validate(decrements);
        int index = entries.FindIndex(e => ReferenceEquals(e.Info, snapshot));
        List<byte[]> newEntries = [.. entries.Where((_, i) => i != index).Select(e => e.Bytes)];
        RefcountEditor.Allocation? allocation = newEntries.Count == 0 ? null : refcounts.Allocate(Qcow2Layout.CeilDiv(Qcow2SnapshotTable.TableLength(newEntries), clusterSize));

        // Nothing was written so far: every refusal above leaves the image as it was.
        ClearUnknownAutoclearBits();
        ulong tableOffset = 0;
        if (allocation is not null)
        {
            refcounts.Commit(allocation);
            tableOffset = allocation.DataStart * clusterSize;
            WriteTable(refcounts.Map, Qcow2SnapshotTable.Serialize(newEntries, clusterSize), tableOffset);
            PositionalFile.Flush(handle);
        }

        SwitchSnapshotTable(newEntries.Count, tableOffset, refcounts);

        // The snapshot is gone from the table: from here a crash only leaks its clusters.
        refcounts.Adjust(decrements);
        PositionalFile.Flush(handle);
        ulong[] active = references.ReadL1(header.L1TableOffset, header.L1Size);
        if (references.RebuildCopiedBits(active, refcounts))
        {
            references.WriteL1(active, header.L1TableOffset, wholeClusters: false);
        }

        PositionalFile.Flush(handle);
    }

    /// <summary>Points the header at a new, flushed snapshot table (nb_snapshots and snapshots_offset, bytes 60..71, in one write), then frees the old table.</summary>
    private void SwitchSnapshotTable(int count, ulong tableOffset, RefcountEditor refcounts)
    {
        byte[] fields = new byte[12];
        BinaryPrimitives.WriteUInt32BigEndian(fields, (uint)count);
        BinaryPrimitives.WriteUInt64BigEndian(fields.AsSpan(4), tableOffset);
        ImageIo.Write(handle, fields, 60);
        PositionalFile.Flush(handle);
        if (header.SnapshotCount > 0)
        {
            ulong oldLength = entries.Aggregate(0UL, (sum, e) => ((sum + 7) & ~7UL) + (ulong)e.Bytes.Length);
            refcounts.Free(header.SnapshotsOffset / clusterSize, Qcow2Layout.CeilDiv(oldLength, clusterSize));
            PositionalFile.Flush(handle);
        }
    }

    /// <summary>Rewrites size, crypt_method, l1_size and l1_table_offset (bytes 24..47) in one write within the first sector.</summary>
    /// <summary>A new snapshot table, in clusters just allocated: checked against the metadata map before it is written.</summary>
    private void WriteTable(Qcow2MetadataMap map, byte[] table, ulong tableOffset)
    {
        map.EnsureFree(tableOffset, (ulong)table.Length, Qcow2MetadataKind.SnapshotTable);
        ImageIo.Write(handle, table, tableOffset);
    }

    private void WriteSizeAndL1(ulong size, uint l1Size, ulong l1Offset)
    {
        byte[] fields = head.AsSpan(24, 24).ToArray();
        BinaryPrimitives.WriteUInt64BigEndian(fields, size);
        BinaryPrimitives.WriteUInt32BigEndian(fields.AsSpan(12), l1Size);
        BinaryPrimitives.WriteUInt64BigEndian(fields.AsSpan(16), l1Offset);
        ImageIo.Write(handle, fields, 24);
    }

    /// <summary>qcow2.rst "Header": a writer must clear the autoclear bits it does not know before changing the image.</summary>
    private void ClearUnknownAutoclearBits()
    {
        const ulong known = Qcow2Header.AutoclearBitmaps | Qcow2Header.AutoclearDataFileRaw;
        if (header.Version >= 3 && (header.AutoclearFeatures & ~known) != 0)
        {
            byte[] field = new byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(field, header.AutoclearFeatures & known);
            ImageIo.Write(handle, field, 88);
            PositionalFile.Flush(handle);
        }
    }

    private Qcow2Header Reread()
    {
        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        byte[] fresh = ImageIo.ReadBytes(handle, 0, (int)Math.Min(64UL * 1024, fileLength), path);
        return Qcow2Reader.ReadHeader(handle, fresh, fileLength, path);
    }

    /// <summary>qemu's <c>find_new_snapshot_id</c>: one more than the largest id read as a decimal number (<c>strtoul</c>).</summary>
    private string NextId()
    {
        ulong max = 0;
        foreach (Qcow2SnapshotTable.Entry entry in entries)
        {
            ulong value = 0;
            foreach (char c in entry.Info.Id.TrimStart())
            {
                if (c is < '0' or > '9')
                {
                    break;
                }

                value = value > (ulong.MaxValue - 9) / 10 ? ulong.MaxValue : (value * 10) + (ulong)(c - '0');
            }

            max = Math.Max(max, value);
        }

        return (max == ulong.MaxValue ? max : max + 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Why <paramref name="name"/> cannot name a snapshot (the shared <see cref="NameRules"/>, then qemu's length), or null.</summary>
    internal static string? CheckName(string? name)
    {
        string? shared = NameRules.Check(name);
        if (shared is not null || name is null)
        {
            return shared;
        }

        return NameRules.ByteCount(name) > MaxNameBytes ? $"it is longer than {MaxNameBytes} bytes" : null;
    }

    internal static void ValidateName(string name)
    {
        string? problem = CheckName(name);
        if (problem is not null)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ImageErrorIds.InvalidSnapshotName, $"'{NameRules.Printable(name)}' is not a valid snapshot name: {problem}.", name);
        }
    }
}
