using System.Buffers.Binary;
using System.Text;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// A parsed and validated qcow2 header (qcow2.rst "Header") with its extensions. Every limit qemu enforces
/// when opening an image (block/qcow2.c, <c>qcow2_do_open</c>) is checked here, so callers can trust the values.
/// </summary>
internal sealed class Qcow2Header
{
    public const uint Magic = 0x514649FB;
    public const int V2HeaderLength = 72;
    public const int V3HeaderLength = 112;
    public const int MinClusterBits = 9;
    public const int MaxClusterBits = 21;
    public const ulong MaxL1Bytes = 32 * 1024 * 1024;
    public const ulong MaxRefcountTableBytes = 8 * 1024 * 1024;
    public const uint MaxSnapshots = 65536;
    public const int MaxBackingNameLength = 1023;

    public const ulong IncompatDirty = 1;
    public const ulong IncompatCorrupt = 2;
    public const ulong IncompatDataFile = 4;
    public const ulong IncompatCompression = 8;
    public const ulong IncompatExtendedL2 = 16;
    public const ulong IncompatKnown = 31;
    public const ulong CompatLazyRefcounts = 1;
    public const ulong AutoclearBitmaps = 1;
    public const ulong AutoclearDataFileRaw = 2;

    public const uint ExtEnd = 0;
    public const uint ExtBackingFormat = 0xE2792ACA;
    public const uint ExtFeatureTable = 0x6803F857;
    public const uint ExtBitmaps = 0x23852875;
    public const uint ExtCryptoHeader = 0x0537BE77;
    public const uint ExtDataFile = 0x44415441;

    public int Version { get; private init; }
    public ulong BackingFileOffset { get; private init; }
    public uint BackingFileSize { get; private init; }
    public int ClusterBits { get; private init; }
    public ulong Size { get; private init; }
    public uint CryptMethod { get; private init; }
    public uint L1Size { get; private init; }
    public ulong L1TableOffset { get; private init; }
    public ulong RefcountTableOffset { get; private init; }
    public uint RefcountTableClusters { get; private init; }
    public uint SnapshotCount { get; private init; }
    public ulong SnapshotsOffset { get; private init; }
    public ulong IncompatibleFeatures { get; private init; }
    public ulong CompatibleFeatures { get; private init; }
    public ulong AutoclearFeatures { get; private init; }
    public int RefcountOrder { get; private init; }
    public uint HeaderLength { get; private init; }
    public CompressionType CompressionType { get; private init; }

    public string? BackingFile { get; private init; }
    public string? BackingFormat { get; private init; }
    public string? DataFile { get; private init; }
    public bool HasBitmaps { get; private init; }

    public uint ClusterSize => 1u << ClusterBits;
    public bool ExtendedL2 => (IncompatibleFeatures & IncompatExtendedL2) != 0;
    public int L2EntryBytes => ExtendedL2 ? 16 : 8;
    public ulong L2Entries => ClusterSize / (ulong)L2EntryBytes;

    /// <summary>Guest bytes one L2 table maps.</summary>
    public ulong L2Span => L2Entries * ClusterSize;
    public int RefcountBits => 1 << RefcountOrder;
    public bool Dirty => (IncompatibleFeatures & IncompatDirty) != 0;
    public bool Corrupt => (IncompatibleFeatures & IncompatCorrupt) != 0;
    public bool LazyRefcounts => (CompatibleFeatures & CompatLazyRefcounts) != 0;

    public static bool HasMagic(ReadOnlySpan<byte> head) =>
        head.Length >= 8 && BinaryPrimitives.ReadUInt32BigEndian(head) == Magic && BinaryPrimitives.ReadUInt32BigEndian(head[4..]) >= 2;

    /// <summary>L1 entries needed for <paramref name="size"/> bytes (qemu's <c>size_to_l1</c>).</summary>
    public static ulong L1EntriesFor(ulong size, ulong l2Span) => (size / l2Span) + (size % l2Span != 0 ? 1UL : 0UL);

    /// <summary>Parses cluster 0 (or as much of it as <paramref name="head"/> holds) of a qcow2 file.</summary>
    public static Qcow2Header Parse(ReadOnlySpan<byte> head, ulong fileLength, string path)
    {
        if (head.Length < V2HeaderLength)
        {
            throw ImageErrors.Invalid(ImageErrorIds.HeaderTruncated, path, $"the qcow2 header is truncated ({head.Length} bytes).");
        }

        int version = (int)BinaryPrimitives.ReadUInt32BigEndian(head[4..]);
        if (BinaryPrimitives.ReadUInt32BigEndian(head) != Magic || version < 2)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidHeader, path, "not a qcow2 image.");
        }

        if (version > 3)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedVersion, path, $"qcow2 version {version} is not supported.");
        }

        uint clusterBits = BinaryPrimitives.ReadUInt32BigEndian(head[20..]);
        if (clusterBits < MinClusterBits || clusterBits > MaxClusterBits)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidClusterSize, path, $"cluster_bits {clusterBits} is outside {MinClusterBits}..{MaxClusterBits}.");
        }

        int cb = (int)clusterBits;
        ulong clusterSize = 1UL << cb;
        ulong incompatible = 0, compatible = 0, autoclear = 0;
        int refcountOrder = 4;
        uint headerLength = V2HeaderLength;
        byte compression = 0;
        if (version >= 3)
        {
            if (head.Length < 104)
            {
                throw ImageErrors.Invalid(ImageErrorIds.HeaderTruncated, path, "the qcow2 v3 header is truncated.");
            }

            incompatible = BinaryPrimitives.ReadUInt64BigEndian(head[72..]);
            compatible = BinaryPrimitives.ReadUInt64BigEndian(head[80..]);
            autoclear = BinaryPrimitives.ReadUInt64BigEndian(head[88..]);
            uint order = BinaryPrimitives.ReadUInt32BigEndian(head[96..]);
            headerLength = BinaryPrimitives.ReadUInt32BigEndian(head[100..]);
            if (headerLength < 104 || headerLength > clusterSize)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidHeaderLength, path, $"header_length {headerLength} is invalid.");
            }

            if (headerLength > head.Length)
            {
                throw ImageErrors.Invalid(ImageErrorIds.HeaderTruncated, path, "the qcow2 header is longer than the file.");
            }

            if (order > 6)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidRefcountOrder, path, $"refcount_order {order} is greater than 6.");
            }

            refcountOrder = (int)order;
            if (headerLength > 104)
            {
                compression = head[104];
            }
        }

        if ((incompatible & ~IncompatKnown) != 0)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedFeature, path, $"unknown incompatible feature(s): {incompatible & ~IncompatKnown:x}.");
        }

        if (compression > 1)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidCompressionType, path, $"unknown compression type {compression}.");
        }

        if ((compression != 0) != ((incompatible & IncompatCompression) != 0))
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidCompressionType, path, "the compression type field and the compression-type feature bit disagree.");
        }

        if ((incompatible & IncompatExtendedL2) != 0 && cb < 14)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidClusterSize, path, "extended L2 entries need clusters of at least 16 KiB.");
        }

        uint cryptMethod = BinaryPrimitives.ReadUInt32BigEndian(head[32..]);
        if (cryptMethod > 2)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidEncryptionMethod, path, $"unknown encryption method {cryptMethod}.");
        }

        ulong size = BinaryPrimitives.ReadUInt64BigEndian(head[24..]);
        ulong l2Span = clusterSize / ((incompatible & IncompatExtendedL2) != 0 ? 16UL : 8UL) * clusterSize;
        ulong l1Needed = L1EntriesFor(size, l2Span);
        if (l1Needed > int.MaxValue)
        {
            throw ImageErrors.Invalid(ImageErrorIds.ImageTooLarge, path, $"the virtual size {size} is too large.");
        }

        uint l1Size = BinaryPrimitives.ReadUInt32BigEndian(head[36..]);
        if ((ulong)l1Size * 8 > MaxL1Bytes)
        {
            throw ImageErrors.Invalid(ImageErrorIds.L1TableTooLarge, path, $"the L1 table ({l1Size} entries) exceeds qemu's 32 MiB limit.");
        }

        if (l1Size < l1Needed)
        {
            throw ImageErrors.Invalid(ImageErrorIds.L1TableTooSmall, path, $"the L1 table ({l1Size} entries) is too small for the virtual size {size}.");
        }

        ulong l1Offset = BinaryPrimitives.ReadUInt64BigEndian(head[40..]);
        if (l1Size > 0)
        {
            CheckTable(l1Offset, (ulong)l1Size * 8, clusterSize, fileLength, path, "L1 table");
        }

        ulong refcountTableOffset = BinaryPrimitives.ReadUInt64BigEndian(head[48..]);
        uint refcountTableClusters = BinaryPrimitives.ReadUInt32BigEndian(head[56..]);
        if (refcountTableClusters == 0)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, "the image has no refcount table.");
        }

        if ((ulong)refcountTableClusters * clusterSize > MaxRefcountTableBytes)
        {
            throw ImageErrors.Invalid(ImageErrorIds.RefcountTableTooLarge, path, $"the refcount table ({refcountTableClusters} clusters) exceeds qemu's 8 MiB limit.");
        }

        CheckTable(refcountTableOffset, (ulong)refcountTableClusters * clusterSize, clusterSize, fileLength, path, "refcount table");

        uint snapshotCount = BinaryPrimitives.ReadUInt32BigEndian(head[60..]);
        ulong snapshotsOffset = BinaryPrimitives.ReadUInt64BigEndian(head[64..]);
        if (snapshotCount > MaxSnapshots)
        {
            throw ImageErrors.Invalid(ImageErrorIds.TooManySnapshots, path, $"{snapshotCount} snapshots exceed qemu's limit of {MaxSnapshots}.");
        }

        if (snapshotCount > 0)
        {
            // 40 bytes is the fixed part of each entry; the variable parts are checked while reading.
            CheckTable(snapshotsOffset, (ulong)snapshotCount * 40, clusterSize, fileLength, path, "snapshot table");
        }

        ulong backingOffset = BinaryPrimitives.ReadUInt64BigEndian(head[8..]);
        uint backingSize = BinaryPrimitives.ReadUInt32BigEndian(head[16..]);
        string? backingFile = null;
        if (backingOffset != 0)
        {
            if (backingOffset >= clusterSize || backingSize > MaxBackingNameLength || backingSize > clusterSize - backingOffset)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidBackingName, path, "the backing file name is too long or lies outside cluster 0.");
            }

            if (backingOffset + backingSize > (ulong)head.Length)
            {
                throw ImageErrors.Invalid(ImageErrorIds.HeaderTruncated, path, "the backing file name lies past the end of the file.");
            }

            backingFile = DecodeString(head.Slice((int)backingOffset, (int)backingSize));
        }

        // Extensions run from the header's end to the backing name (or the end of cluster 0).
        ulong extEnd = backingOffset != 0 ? backingOffset : clusterSize;
        extEnd = Math.Min(extEnd, (ulong)head.Length);
        ulong offset = headerLength;
        string? backingFormat = null;
        string? dataFile = null;
        bool hasBitmaps = false;
        while (offset + 8 <= extEnd)
        {
            uint type = BinaryPrimitives.ReadUInt32BigEndian(head[(int)offset..]);
            uint length = BinaryPrimitives.ReadUInt32BigEndian(head[((int)offset + 4)..]);
            offset += 8;
            if (type == ExtEnd)
            {
                break;
            }

            if (length > extEnd - offset)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidHeaderExtension, path, $"header extension 0x{type:x8} is too large.");
            }

            ReadOnlySpan<byte> data = head.Slice((int)offset, (int)length);
            switch (type)
            {
                case ExtBackingFormat:
                    if (length >= 16)
                    {
                        throw ImageErrors.Invalid(ImageErrorIds.InvalidHeaderExtension, path, $"the backing format extension is too long ({length} bytes).");
                    }

                    backingFormat = DecodeString(data);
                    break;
                case ExtDataFile:
                    dataFile = DecodeString(data);
                    break;
                case ExtBitmaps:
                    hasBitmaps = true;
                    break;
            }

            offset += (length + 7UL) & ~7UL;
        }

        return new Qcow2Header
        {
            Version = version,
            BackingFileOffset = backingOffset,
            BackingFileSize = backingSize,
            ClusterBits = cb,
            Size = size,
            CryptMethod = cryptMethod,
            L1Size = l1Size,
            L1TableOffset = l1Offset,
            RefcountTableOffset = refcountTableOffset,
            RefcountTableClusters = refcountTableClusters,
            SnapshotCount = snapshotCount,
            SnapshotsOffset = snapshotsOffset,
            IncompatibleFeatures = incompatible,
            CompatibleFeatures = compatible,
            AutoclearFeatures = autoclear,
            RefcountOrder = refcountOrder,
            HeaderLength = headerLength,
            CompressionType = (CompressionType)compression,
            BackingFile = backingFile,
            BackingFormat = backingFormat,
            DataFile = (incompatible & IncompatDataFile) != 0 ? dataFile : null,
            HasBitmaps = hasBitmaps,
        };
    }

    /// <summary>qemu's <c>validate_table_offset</c>, plus: the table must lie inside the file.</summary>
    private static void CheckTable(ulong offset, ulong length, ulong clusterSize, ulong fileLength, string path, string what)
    {
        if (offset % clusterSize != 0 || offset == 0)
        {
            throw ImageErrors.Invalid(ImageErrorIds.TableOutOfBounds, path, $"the {what} offset 0x{offset:x} is not a valid cluster offset.");
        }

        if (offset > fileLength || length > fileLength - offset)
        {
            throw ImageErrors.Invalid(ImageErrorIds.TableOutOfBounds, path, $"the {what} at 0x{offset:x} ({length} bytes) lies past the end of the file.");
        }
    }

    // qemu copies the bytes into a C string: a NUL ends the name early.
    private static string DecodeString(ReadOnlySpan<byte> bytes)
    {
        int nul = bytes.IndexOf((byte)0);
        return Encoding.UTF8.GetString(nul >= 0 ? bytes[..nul] : bytes);
    }
}
