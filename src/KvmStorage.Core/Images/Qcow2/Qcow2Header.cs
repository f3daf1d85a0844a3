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

    /// <summary>Where the LUKS header of an encrypted image lies (the full disk encryption header pointer), or (0, 0).</summary>
    public (ulong Offset, ulong Length) CryptoHeader { get; private init; }

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

    /// <summary>
    /// Parses cluster 0 (or as much of it as <paramref name="head"/> holds) of a qcow2 file, checking each field in the
    /// order qemu's <c>qcow2_do_open</c> does, so that a file with several faults fails as qemu-img fails on it.
    /// </summary>
    public static Qcow2Header Parse(ReadOnlySpan<byte> head, ulong fileLength, string path)
    {
        int version = ReadVersion(head, path);
        int clusterBits = ReadClusterBits(head, path);
        ulong clusterSize = 1UL << clusterBits;
        Features features = version >= 3 ? ReadV3Fields(head, clusterSize, path) : new Features(0, 0, 0, 4, V2HeaderLength, 0);
        CheckFeatures(features, clusterBits, path);

        uint cryptMethod = BinaryPrimitives.ReadUInt32BigEndian(head[32..]);
        if (cryptMethod > 2)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidEncryptionMethod, path, $"unknown encryption method {cryptMethod}.");
        }

        ulong size = BinaryPrimitives.ReadUInt64BigEndian(head[24..]);
        (uint l1Size, ulong l1Offset) = ReadL1Table(head, size, clusterSize, features.Incompatible, fileLength, path);
        (ulong refcountTableOffset, uint refcountTableClusters) = ReadRefcountTable(head, clusterSize, fileLength, path);
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
        string? backingFile = ReadBackingName(head, backingOffset, backingSize, clusterSize, path);

        // Extensions run from the header's end to the backing name (or the end of cluster 0).
        ulong extensionsEnd = Math.Min(backingOffset != 0 ? backingOffset : clusterSize, (ulong)head.Length);
        (string? backingFormat, string? dataFile, bool hasBitmaps, (ulong, ulong) cryptoHeader) = ReadExtensions(head, features.HeaderLength, extensionsEnd, path);
        if (cryptMethod == 2)
        {
            // qemu's qcow2_do_open: a LUKS image must say where its LUKS header lies, in whole clusters inside the file.
            if (cryptoHeader.Item2 == 0)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidHeaderExtension, path, "the image is LUKS-encrypted but has no encryption header pointer.");
            }

            CheckTable(cryptoHeader.Item1, cryptoHeader.Item2, clusterSize, fileLength, path, "encryption header");
        }

        return new Qcow2Header
        {
            Version = version,
            BackingFileOffset = backingOffset,
            BackingFileSize = backingSize,
            ClusterBits = clusterBits,
            Size = size,
            CryptMethod = cryptMethod,
            L1Size = l1Size,
            L1TableOffset = l1Offset,
            RefcountTableOffset = refcountTableOffset,
            RefcountTableClusters = refcountTableClusters,
            SnapshotCount = snapshotCount,
            SnapshotsOffset = snapshotsOffset,
            IncompatibleFeatures = features.Incompatible,
            CompatibleFeatures = features.Compatible,
            AutoclearFeatures = features.Autoclear,
            RefcountOrder = features.RefcountOrder,
            HeaderLength = features.HeaderLength,
            CompressionType = (CompressionType)features.Compression,
            BackingFile = backingFile,
            BackingFormat = backingFormat,
            DataFile = (features.Incompatible & IncompatDataFile) != 0 ? dataFile : null,
            HasBitmaps = hasBitmaps,
            CryptoHeader = cryptoHeader,
        };
    }

    private static int ReadVersion(ReadOnlySpan<byte> head, string path)
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

        return version;
    }

    private static int ReadClusterBits(ReadOnlySpan<byte> head, string path)
    {
        uint clusterBits = BinaryPrimitives.ReadUInt32BigEndian(head[20..]);
        if (clusterBits < MinClusterBits || clusterBits > MaxClusterBits)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidClusterSize, path, $"cluster_bits {clusterBits} is outside {MinClusterBits}..{MaxClusterBits}.");
        }

        return (int)clusterBits;
    }

    /// <summary>The version 3 fields (bytes 72..104 and the compression type at 104); version 2 has their defaults.</summary>
    private static Features ReadV3Fields(ReadOnlySpan<byte> head, ulong clusterSize, string path)
    {
        if (head.Length < 104)
        {
            throw ImageErrors.Invalid(ImageErrorIds.HeaderTruncated, path, "the qcow2 v3 header is truncated.");
        }

        ulong incompatible = BinaryPrimitives.ReadUInt64BigEndian(head[72..]);
        ulong compatible = BinaryPrimitives.ReadUInt64BigEndian(head[80..]);
        ulong autoclear = BinaryPrimitives.ReadUInt64BigEndian(head[88..]);
        uint order = BinaryPrimitives.ReadUInt32BigEndian(head[96..]);
        uint headerLength = BinaryPrimitives.ReadUInt32BigEndian(head[100..]);
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

        byte compression = headerLength > 104 ? head[104] : (byte)0;
        return new Features(incompatible, compatible, autoclear, (int)order, headerLength, compression);
    }

    private static void CheckFeatures(Features features, int clusterBits, string path)
    {
        ulong incompatible = features.Incompatible;
        if ((incompatible & ~IncompatKnown) != 0)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedFeature, path, $"unknown incompatible feature(s): {incompatible & ~IncompatKnown:x}.");
        }

        if (features.Compression > 1)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidCompressionType, path, $"unknown compression type {features.Compression}.");
        }

        if ((features.Compression != 0) != ((incompatible & IncompatCompression) != 0))
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidCompressionType, path, "the compression type field and the compression-type feature bit disagree.");
        }

        if ((incompatible & IncompatExtendedL2) != 0 && clusterBits < 14)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidClusterSize, path, "extended L2 entries need clusters of at least 16 KiB.");
        }
    }

    /// <summary>l1_size and l1_table_offset: large enough for the virtual size, within qemu's limit, inside the file.</summary>
    private static (uint Size, ulong Offset) ReadL1Table(ReadOnlySpan<byte> head, ulong size, ulong clusterSize, ulong incompatible, ulong fileLength, string path)
    {
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

        return (l1Size, l1Offset);
    }

    private static (ulong Offset, uint Clusters) ReadRefcountTable(ReadOnlySpan<byte> head, ulong clusterSize, ulong fileLength, string path)
    {
        ulong offset = BinaryPrimitives.ReadUInt64BigEndian(head[48..]);
        uint clusters = BinaryPrimitives.ReadUInt32BigEndian(head[56..]);
        if (clusters == 0)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidMetadata, path, "the image has no refcount table.");
        }

        if ((ulong)clusters * clusterSize > MaxRefcountTableBytes)
        {
            throw ImageErrors.Invalid(ImageErrorIds.RefcountTableTooLarge, path, $"the refcount table ({clusters} clusters) exceeds qemu's 8 MiB limit.");
        }

        CheckTable(offset, (ulong)clusters * clusterSize, clusterSize, fileLength, path, "refcount table");
        return (offset, clusters);
    }

    /// <summary>The backing file name, which must lie in cluster 0 (null when the image has none).</summary>
    private static string? ReadBackingName(ReadOnlySpan<byte> head, ulong offset, uint size, ulong clusterSize, string path)
    {
        if (offset == 0)
        {
            return null;
        }

        if (offset >= clusterSize || size > MaxBackingNameLength || size > clusterSize - offset)
        {
            throw ImageErrors.Invalid(ImageErrorIds.InvalidBackingName, path, "the backing file name is too long or lies outside cluster 0.");
        }

        if (offset + size > (ulong)head.Length)
        {
            throw ImageErrors.Invalid(ImageErrorIds.HeaderTruncated, path, "the backing file name lies past the end of the file.");
        }

        return DecodeString(head.Slice((int)offset, (int)size));
    }

    /// <summary>The header extensions the engine uses (qcow2.rst "Header extensions"), from the header's end to <paramref name="end"/>.</summary>
    private static (string? BackingFormat, string? DataFile, bool HasBitmaps, (ulong Offset, ulong Length) CryptoHeader) ReadExtensions(ReadOnlySpan<byte> head, uint headerLength, ulong end, string path)
    {
        ulong offset = headerLength;
        (ulong, ulong) cryptoHeader = (0, 0);
        string? backingFormat = null;
        string? dataFile = null;
        bool hasBitmaps = false;
        while (offset + 8 <= end)
        {
            uint type = BinaryPrimitives.ReadUInt32BigEndian(head[(int)offset..]);
            uint length = BinaryPrimitives.ReadUInt32BigEndian(head[((int)offset + 4)..]);
            offset += 8;
            if (type == ExtEnd)
            {
                break;
            }

            if (length > end - offset)
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
                case ExtCryptoHeader:
                    if (length != 16)
                    {
                        throw ImageErrors.Invalid(ImageErrorIds.InvalidHeaderExtension, path, $"the encryption header pointer is {length} bytes long, not 16.");
                    }

                    cryptoHeader = (BinaryPrimitives.ReadUInt64BigEndian(data), BinaryPrimitives.ReadUInt64BigEndian(data[8..]));
                    break;
            }

            offset += (length + 7UL) & ~7UL;
        }

        return (backingFormat, dataFile, hasBitmaps, cryptoHeader);
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

    /// <summary>The fields version 3 added: feature bits, refcount order, header length and compression type.</summary>
    private readonly record struct Features(ulong Incompatible, ulong Compatible, ulong Autoclear, int RefcountOrder, uint HeaderLength, byte Compression);
}
