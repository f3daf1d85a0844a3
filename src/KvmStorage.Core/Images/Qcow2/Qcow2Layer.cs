using System.Buffers;
using System.Buffers.Binary;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Luks;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// qcow2 v2/v3 (qcow2.rst "Cluster mapping"): normal, zero and compressed clusters, extended L2 entries
/// with subclusters. L2 tables are cached within a byte budget; nothing is written. A LUKS-encrypted image's data
/// clusters are decrypted with the host sector as tweak (qemu's crypt_physical_offset); zero clusters read as zeros.
/// </summary>
internal sealed class Qcow2Layer : ImageLayer
{
    private const long L2CacheBudget = 32L * 1024 * 1024;

    private readonly int clusterBits;
    private readonly ulong clusterSize;
    private readonly bool extended;
    private readonly int entryBytes;
    private readonly int l2Bits;
    private readonly ulong[] l1;
    private readonly Qcow2Entries.CompressedDescriptor compressed;
    private readonly Decompression.Method method;
    private readonly BoundedCache<byte[]> l2Cache;
    private readonly XtsAes? cipher;
    private readonly object lastGate = new();
    private readonly Lazy<bool> metadataPreallocated;
    private readonly ulong refcountTableOffset;
    private readonly uint refcountTableClusters;
    private readonly int refcountBits;
    private ulong lastEntry = ulong.MaxValue;
    private byte[]? lastCluster;

    private Qcow2Layer(HostFile file, ulong size, Qcow2Header header, ulong[] l1, XtsAes? cipher)
        : base(file, size)
    {
        this.cipher = cipher;
        clusterBits = header.ClusterBits;
        clusterSize = header.ClusterSize;
        extended = header.ExtendedL2;
        entryBytes = header.L2EntryBytes;
        l2Bits = clusterBits + System.Numerics.BitOperations.Log2(header.L2Entries);
        this.l1 = l1;
        compressed = new Qcow2Entries.CompressedDescriptor(clusterBits);
        method = Decompression.For(header.CompressionType);
        l2Cache = new BoundedCache<byte[]>(L2CacheBudget, (long)clusterSize);
        refcountTableOffset = header.RefcountTableOffset;
        refcountTableClusters = header.RefcountTableClusters;
        refcountBits = 1 << header.RefcountOrder;
        metadataPreallocated = new Lazy<bool>(DetectMetadataPreallocation);
    }

    public static Qcow2Layer Open(HostFile file, ImageInfo info, ImagePassphrase? passphrase = null)
    {
        // Cluster 0 holds the header and its extensions: read that much, not more.
        byte[] first = file.ReadMetadata(0, (int)Math.Min(file.Length, 512), "qcow2 header");
        uint bits = first.Length >= 24 ? BinaryPrimitives.ReadUInt32BigEndian(first.AsSpan(20)) : 0;
        ulong headLength = bits is >= 9 and <= 21 ? 1UL << (int)bits : 2UL * 1024 * 1024;
        byte[] head = file.ReadMetadata(0, (int)Math.Min(file.Length, headLength), "qcow2 header");
        Qcow2Header header = Qcow2Header.Parse(head, file.Length, file.Path);
        if (header.CryptMethod == 1)
        {
            throw BlockErrors.NotSupported(BlockErrorIds.ImageEncrypted, file.Path, "the image uses qcow2's legacy AES encryption, which qemu no longer opens; only LUKS encryption can be read.");
        }

        if ((header.IncompatibleFeatures & Qcow2Header.IncompatDataFile) != 0)
        {
            throw BlockErrors.NotSupported(BlockErrorIds.ExternalDataFileNotSupported, file.Path, "the image keeps its data in an external data file, which the block reader does not support.");
        }

        // Only the entries that map the virtual size matter; the header checked they lie inside the file.
        ulong needed = Qcow2Header.L1EntriesFor(header.Size, header.L2Span);
        ulong[] l1 = new ulong[needed];
        if (needed > 0)
        {
            byte[] raw = file.ReadMetadata(header.L1TableOffset, checked((int)(needed * 8)), "L1 table");
            for (int i = 0; i < l1.Length; i++)
            {
                l1[i] = BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
            }
        }

        RefuseSharedL2Tables(file.Path, l1);
        XtsAes? cipher = header.CryptMethod == 2
            ? LuksRegion.Unlock(file, header.CryptoHeader.Offset, header.CryptoHeader.Length, checkPayload: false, passphrase).Cipher
            : null;
        return new Qcow2Layer(file, Math.Min(info.VirtualSize, header.Size), header, l1, cipher);
    }

    /// <summary>
    /// Two active L1 entries naming one L2 table never happen in a sound image (qemu-img check reports the table's
    /// refcount as wrong), and a crafted image can repeat one table millions of times, so that every walk over it costs
    /// what the image declares (petabytes of "data") instead of what it holds. Refused at open, in time linear in the
    /// L1 table: after this, the work of any walk is bounded by the file's size.
    /// </summary>
    private static void RefuseSharedL2Tables(string path, ulong[] l1)
    {
        var seen = new Dictionary<ulong, int>();
        for (int i = 0; i < l1.Length; i++)
        {
            ulong l2 = Qcow2Entries.HostOffset(l1[i]);
            if (l2 == 0)
            {
                continue;
            }

            if (!seen.TryAdd(l2, i))
            {
                throw BlockErrors.Invalid(
                    BlockErrorIds.SharedMappingTable,
                    path,
                    $"L1 entries {seen[l2]} and {i} name the same L2 table (0x{l2:x}); the image is corrupt (Test-Volume reports it) and is not read.");
            }
        }
    }

    public override LayerRun Map(ulong offset, ulong maxLength)
    {
        ulong l1Index = offset >> l2Bits;
        ulong spanEnd = (l1Index + 1) << l2Bits;
        ulong limit = Math.Min(maxLength, spanEnd - offset);
        ulong l2Offset = l1Index < (ulong)l1.Length ? Qcow2Entries.HostOffset(l1[l1Index]) : 0;
        if (l2Offset == 0)
        {
            return new LayerRun(limit, RunKind.Unallocated);
        }

        if ((l2Offset & (clusterSize - 1)) != 0)
        {
            throw BlockErrors.Mapping(File.Path, $"L1 entry {l1Index} points at an unaligned L2 table (0x{l2Offset:x}).");
        }

        byte[] l2 = l2Cache.GetOrLoad(l2Offset, o => File.ReadMetadata(o, (int)clusterSize, "L2 table"));
        ulong entries = clusterSize / (ulong)entryBytes;
        int index = (int)((offset >> clusterBits) & (entries - 1));
        ulong inCluster = offset & (clusterSize - 1);
        ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan(index * entryBytes));
        if (Qcow2Entries.IsCompressed(entry))
        {
            return new LayerRun(Math.Min(limit, clusterSize - inCluster), RunKind.Special, 0, entry);
        }

        return extended ? MapExtended(l2, index, offset, limit) : MapStandard(l2, index, inCluster, limit);
    }

    public override void ReadRun(ulong offset, in LayerRun run, Span<byte> destination)
    {
        if (run.Kind == RunKind.Data)
        {
            if (cipher is null)
            {
                File.ReadData(run.HostOffset, destination);
            }
            else
            {
                LuksRegion.ReadDecrypted(File, cipher, run.HostOffset, 0, destination);
            }

            return;
        }

        if (cipher is not null)
        {
            // qemu never writes compressed clusters into an encrypted image, and would hand back their bytes undecrypted.
            throw BlockErrors.Invalid(BlockErrorIds.InvalidCompressedData, File.Path, $"the encrypted image holds a compressed cluster (L2 entry 0x{run.Tag:x}), which qemu cannot write or read.");
        }

        int inCluster = (int)(offset & (clusterSize - 1));
        ulong entry = run.Tag;
        lock (lastGate)
        {
            if (lastEntry == entry && lastCluster is not null)
            {
                lastCluster.AsSpan(inCluster, destination.Length).CopyTo(destination);
                return;
            }
        }

        byte[] cluster = new byte[clusterSize];
        DecompressCluster(entry, cluster);
        cluster.AsSpan(inCluster, destination.Length).CopyTo(destination);
        lock (lastGate)
        {
            lastEntry = entry;
            lastCluster = cluster;
        }
    }

    public override bool SupportsBacking => true;

    /// <summary>
    /// qemu's qcow2_co_block_status: a normal cluster is data at its host offset, a compressed one data at none, a zero
    /// cluster zeros (at its offset when it keeps one: preallocated zeros), an unallocated one nothing. An encrypted
    /// image gives no offsets. When the image looks preallocated (see <see cref="DetectMetadataPreallocation"/>), the
    /// file's holes beneath data count as zeros.
    /// </summary>
    public override LayerStatus Status(ulong offset, ulong maxLength)
    {
        ulong l1Index = offset >> l2Bits;
        ulong limit = Math.Min(maxLength, ((l1Index + 1) << l2Bits) - offset);
        ulong l2Offset = l1Index < (ulong)l1.Length ? Qcow2Entries.HostOffset(l1[l1Index]) : 0;
        if (l2Offset == 0)
        {
            return new LayerStatus(limit);
        }

        if ((l2Offset & (clusterSize - 1)) != 0)
        {
            throw BlockErrors.Mapping(File.Path, $"L1 entry {l1Index} points at an unaligned L2 table (0x{l2Offset:x}).");
        }

        byte[] l2 = l2Cache.GetOrLoad(l2Offset, o => File.ReadMetadata(o, (int)clusterSize, "L2 table"));
        int count = l2.Length / entryBytes;
        int unitBits = extended ? clusterBits - 5 : clusterBits;
        ulong unit = 1UL << unitBits;
        ulong first = (offset & ((1UL << l2Bits) - 1)) >> unitBits;
        (StatusKind kind, ulong host) = StatusOf(l2, first);
        ulong length = unit - (offset & (unit - 1));
        if (kind != StatusKind.Compressed)
        {
            ulong expected = host + unit;
            for (ulong u = first + 1; length < limit && u < (ulong)count << (extended ? 5 : 0); u++)
            {
                (StatusKind nextKind, ulong nextHost) = StatusOf(l2, u);
                if (nextKind != kind || (HasOffset(kind) && nextHost != expected))
                {
                    break;
                }

                length += unit;
                expected += unit;
            }
        }

        length = Math.Min(length, limit);
        ulong at = host + (offset & (unit - 1));
        bool offsetValid = HasOffset(kind) && cipher is null;
        return kind switch
        {
            StatusKind.Normal => new LayerStatus(length, Data: true, OffsetValid: offsetValid, Offset: offsetValid ? at : 0, Recurse: offsetValid && metadataPreallocated.Value),
            StatusKind.Compressed => new LayerStatus(length, Data: true),
            StatusKind.ZeroAllocated => new LayerStatus(length, Zero: true, OffsetValid: offsetValid, Offset: offsetValid ? at : 0),
            StatusKind.Zero => new LayerStatus(length, Zero: true),

            // An unallocated subcluster of an allocated cluster keeps its place in the file: qemu gives its offset.
            StatusKind.UnallocatedAllocated => new LayerStatus(length, OffsetValid: offsetValid, Offset: offsetValid ? at : 0),
            _ => new LayerStatus(length),
        };

        static bool HasOffset(StatusKind kind) => kind is StatusKind.Normal or StatusKind.ZeroAllocated or StatusKind.UnallocatedAllocated;
    }

    /// <summary>qcow2_get_subcluster_type for cluster (or, with extended L2 entries, subcluster) <paramref name="unit"/> of a table.</summary>
    private (StatusKind Kind, ulong Host) StatusOf(byte[] l2, ulong unit)
    {
        int cluster = (int)(extended ? unit >> 5 : unit);
        ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan(cluster * entryBytes));
        if (Qcow2Entries.IsCompressed(entry))
        {
            return (StatusKind.Compressed, 0);
        }

        ulong host = Qcow2Entries.HostOffset(entry);
        if (!extended)
        {
            return (Qcow2Entries.IsZero(entry), host) switch
            {
                (true, 0) => (StatusKind.Zero, 0),
                (true, _) => (StatusKind.ZeroAllocated, host),
                (false, 0) => (StatusKind.Unallocated, 0),
                _ => (StatusKind.Normal, host),
            };
        }

        int sub = (int)(unit & 31);
        ulong bitmap = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((cluster * entryBytes) + 8));
        ulong subHost = host + ((ulong)sub << (clusterBits - 5));
        if (Qcow2Entries.SubclusterZero(bitmap, sub))
        {
            return host == 0 ? (StatusKind.Zero, 0) : (StatusKind.ZeroAllocated, subHost);
        }

        return host == 0 ? (StatusKind.Unallocated, 0)
            : Qcow2Entries.SubclusterAllocated(bitmap, sub) ? (StatusKind.Normal, subHost)
            : (StatusKind.UnallocatedAllocated, subHost);
    }

    /// <summary>
    /// qemu's qcow2_detect_metadata_preallocation: the image counts as preallocated when more of its clusters carry a
    /// reference than the file has blocks allocated for (by a ninth, or two clusters): then data clusters may be holes
    /// of the file, and the block status asks the file beneath them.
    /// </summary>
    private bool DetectMetadataPreallocation()
    {
        ulong realClusters = IO.FileStatus.Get(File.Path).AllocatedBytes / clusterSize;
        ulong threshold = Math.Max(realClusters * 10 / 9, realClusters + 2);
        ulong endCluster = (File.Length + clusterSize - 1) / clusterSize;
        ulong perBlock = clusterSize * 8 / (ulong)refcountBits;
        ulong tableEntries = (ulong)refcountTableClusters * clusterSize / 8;
        ulong counted = 0;
        for (ulong t = 0; t < tableEntries && t * perBlock < endCluster && counted < threshold; t++)
        {
            if ((refcountTableOffset + ((t + 1) * 8)) > File.Length)
            {
                break;
            }

            ulong blockOffset = Qcow2Entries.RefcountBlockOffset(BinaryPrimitives.ReadUInt64BigEndian(File.ReadMetadata(refcountTableOffset + (t * 8), 8, "refcount table entry")));
            if (blockOffset == 0 || blockOffset + clusterSize > File.Length)
            {
                continue;
            }

            byte[] block = File.ReadMetadata(blockOffset, (int)clusterSize, "refcount block");
            ulong n = Math.Min(perBlock, endCluster - (t * perBlock));
            for (ulong i = 0; i < n && counted < threshold; i++)
            {
                if (Qcow2Entries.ReadRefcount(block, i, refcountBits) != 0)
                {
                    counted++;
                }
            }
        }

        return counted >= threshold;
    }

    private enum StatusKind
    {
        Unallocated,
        UnallocatedAllocated,
        Normal,
        Compressed,
        Zero,
        ZeroAllocated,
    }

    private LayerRun MapStandard(byte[] l2, int index, ulong inCluster, ulong limit) =>
        LayerRun.OverBlocks(((ulong)index * clusterSize) + inCluster, limit, clusterSize, (ulong)(l2.Length / entryBytes), i =>
        {
            ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((int)i * entryBytes));

            // A compressed cluster ends a run: Map returns it on its own.
            return Qcow2Entries.IsCompressed(entry) ? (RunKind.Special, 0) : Classify(entry, (int)i);
        });

    // qcow2_get_cluster_type: the zero flag wins over an offset; no offset means unallocated.
    private (RunKind Kind, ulong Host) Classify(ulong entry, int index)
    {
        if (Qcow2Entries.IsZero(entry))
        {
            return (RunKind.Zero, 0);
        }

        ulong host = Qcow2Entries.HostOffset(entry);
        if (host == 0)
        {
            return (RunKind.Unallocated, 0);
        }

        if ((host & (clusterSize - 1)) != 0)
        {
            throw BlockErrors.Mapping(File.Path, $"L2 entry {index} points at an unaligned cluster (0x{host:x}).");
        }

        return (RunKind.Data, host);
    }

    /// <summary>Extended L2 (qcow2.rst "Extended L2 Entries"): 32 subclusters, each allocated, zero or unallocated.</summary>
    private LayerRun MapExtended(byte[] l2, int index, ulong offset, ulong limit)
    {
        int subBits = clusterBits - 5;
        ulong subSize = 1UL << subBits;
        int count = l2.Length / entryBytes;
        ulong inSub = offset & (subSize - 1);
        int cluster = index;
        int sub = (int)((offset & (clusterSize - 1)) >> subBits);
        (RunKind kind, ulong host) = ClassifySub(l2, cluster, sub);
        ulong length = subSize - inSub;
        ulong expected = host + subSize;
        while (length < limit)
        {
            if (++sub == 32)
            {
                sub = 0;
                if (++cluster >= count)
                {
                    break;
                }

                if (Qcow2Entries.IsCompressed(BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan(cluster * entryBytes))))
                {
                    break;
                }
            }

            (RunKind nextKind, ulong nextHost) = ClassifySub(l2, cluster, sub);
            if (nextKind != kind || (kind == RunKind.Data && nextHost != expected))
            {
                break;
            }

            length += subSize;
            expected += subSize;
        }

        return new LayerRun(Math.Min(length, limit), kind, kind == RunKind.Data ? host + inSub : 0);
    }

    private (RunKind Kind, ulong Host) ClassifySub(byte[] l2, int cluster, int sub)
    {
        ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan(cluster * entryBytes));
        ulong bitmap = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((cluster * entryBytes) + 8));
        bool allocated = Qcow2Entries.SubclusterAllocated(bitmap, sub);
        bool zero = Qcow2Entries.SubclusterZero(bitmap, sub);
        if (allocated && zero)
        {
            throw BlockErrors.Mapping(File.Path, $"L2 entry {cluster} marks subcluster {sub} both allocated and zero.");
        }

        if (zero)
        {
            return (RunKind.Zero, 0);
        }

        if (!allocated)
        {
            return (RunKind.Unallocated, 0);
        }

        ulong host = Qcow2Entries.HostOffset(entry);
        if (host == 0 || (host & (clusterSize - 1)) != 0)
        {
            throw BlockErrors.Mapping(File.Path, $"L2 entry {cluster} has allocated subclusters but an invalid cluster offset (0x{host:x}).");
        }

        return (RunKind.Data, host + ((ulong)sub << (clusterBits - 5)));
    }

    public override void Dispose()
    {
        cipher?.Dispose();
        base.Dispose();
    }

    /// <summary>qcow2.rst "Compressed Clusters Descriptor": host offset and a count of additional 512-byte sectors.</summary>
    private void DecompressCluster(ulong entry, byte[] cluster)
    {
        ulong coffset = compressed.HostOffset(entry);
        ulong csize = compressed.Length(entry);
        if (coffset == 0 || coffset >= File.Length)
        {
            throw BlockErrors.Mapping(File.Path, $"a compressed cluster lies at 0x{coffset:x}, outside the file.");
        }

        // The descriptor may overstate the size up to a sector; qemu reads what the file has.
        int length = (int)Math.Min(csize, File.Length - coffset);
        byte[] input = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            File.ReadData(coffset, input.AsSpan(0, length));
            int produced = Decompression.Decompress(method, input, length, cluster, File.Path);
            if (produced != cluster.Length)
            {
                throw Decompression.Short(File.Path, coffset, produced, cluster.Length);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(input);
        }
    }
}
