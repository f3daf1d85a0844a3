using System.Buffers.Binary;
using System.Numerics;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Luks;
using KvmStorage.Core.Images.Map;
using KvmStorage.Core.Images.Qcow2;
using KvmStorage.Core.Images.Vdi;
using KvmStorage.Core.Images.Vhdx;
using KvmStorage.Core.Images.Vpc;

namespace KvmStorage.Core.Images.Measure;

/// <summary>What a new image would be made of (<c>qemu-img measure -O FMT -o OPTIONS</c>).</summary>
public sealed record MeasureOptions
{
    /// <summary>The output format: qcow2, raw (a LUKS file with <see cref="Encrypt"/>), vhdx, vpc or vdi.</summary>
    public ImageFormat Format { get; init; } = ImageFormat.Qcow2;

    /// <summary>qcow2 cluster size (default 64 KiB); vhdx block size (default by size, as qemu-img create).</summary>
    public uint? ClusterSize { get; init; }

    /// <summary>qcow2 compatibility: "1.1" (default) or "0.10".</summary>
    public string Compat { get; init; } = "1.1";

    /// <summary>qcow2 refcount width: a power of two from 1 to 64 (16 for compat 0.10).</summary>
    public int RefcountBits { get; init; } = 16;

    /// <summary>qcow2 extended L2 entries (subclusters), clusters of 16 KiB at least.</summary>
    public bool ExtendedL2 { get; init; }

    /// <summary>qcow2: Falloc and Full count every cluster as required; Off and Metadata only the data.</summary>
    public Preallocation Preallocation { get; init; }

    /// <summary>qcow2: the output would be an overlay; every cluster of the input counts, since the backing file may share none.</summary>
    public bool HasBackingFile { get; init; }

    /// <summary>Encrypt with LUKS (qcow2's encrypt.format=luks; raw becomes the luks format): the key size counts.</summary>
    public bool Encrypt { get; init; }

    /// <summary>LUKS master key bytes: 64 for aes-256-xts (default), 32 for aes-128-xts.</summary>
    public int KeyBytes { get; init; } = 64;

    /// <summary>vhdx, vpc, vdi: a fixed image.</summary>
    public bool Fixed { get; init; }

    /// <summary>vpc: the size recorded itself, rounded to whole MiB (Azure), rather than a CHS geometry.</summary>
    public bool ForceSize { get; init; }
}

/// <summary>The sizes <c>qemu-img measure</c> reports: the file a conversion (or a new image) needs, and the file once every block is written.</summary>
public sealed record ImageMeasurement
{
    /// <summary>The figures as qemu-img measure prints them.</summary>
    public override string ToString() => $"required size: {RequiredBytes}, fully allocated size: {FullyAllocatedBytes}";

    /// <summary>The image measured (its host path), or null for a new image of a given size.</summary>
    public string? Path { get; init; }

    /// <summary>The output format, as qemu names it (a raw output encrypted is <c>luks</c>).</summary>
    public required string Format { get; init; }

    /// <summary>The guest size of the image measured (the input's, or the size asked for).</summary>
    public required ulong VirtualSize { get; init; }

    /// <summary>The file size the new image needs (qemu's <c>required</c>).</summary>
    public required ulong RequiredBytes { get; init; }

    /// <summary>The file size once every sector has been written (qemu's <c>fully-allocated</c>).</summary>
    public required ulong FullyAllocatedBytes { get; init; }

    /// <summary>What copying the input's persistent dirty bitmaps would add (qemu's <c>bitmaps</c>): null unless both the input and the output (qcow2 v3) keep bitmaps.</summary>
    public ulong? BitmapsBytes { get; init; }

    /// <summary>Whether the figures are qemu-img measure's own (qcow2, raw, luks) or this module's for its own writers (vhdx, vpc, vdi, which qemu cannot measure).</summary>
    public required bool QemuCompatible { get; init; }
}

/// <summary>Stable error identifiers of measurements.</summary>
public static class MeasureErrorIds
{
    /// <summary>The options contradict each other or the format (qemu-img measure refuses them too).</summary>
    public const string InvalidMeasureOptions = "InvalidMeasureOptions";

    /// <summary>The output format cannot be measured (vmdk, whose streamOptimized output is compressed).</summary>
    public const string MeasureNotSupported = "MeasureNotSupported";
}

/// <summary>
/// <c>qemu-img measure</c>: the file an image would need in another format, from the input's allocation map alone
/// (<see cref="ImageMapper"/>: the clusters holding data, the chain included), or for a new empty image of a size. qcow2,
/// raw and luks follow qemu's qcow2_measure, raw_measure and block_crypto_measure figure for figure; vhdx, vpc and vdi,
/// which qemu cannot measure, give the exact layout of the module's own writers.
/// </summary>
public static class ImageMeasurer
{
    private const ulong MaxL1Bytes = 32UL * 1024 * 1024;

    /// <summary>
    /// Measures converting <paramref name="source"/> (when given) or creating an empty image of <paramref name="size"/>
    /// bytes (when there is no source) with <paramref name="options"/>.
    /// </summary>
    public static ImageMeasurement Measure(IBlockReader? source, ulong? size, MeasureOptions options, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        string path = source?.Info.Path ?? string.Empty;
        if ((source is null) == (size is null))
        {
            throw Invalid(path, "Measure either an image or a size, not both and not neither.");
        }

        if (options.ForceSize && options.Format != ImageFormat.Vpc)
        {
            throw Invalid(path, "Forcing the size applies to vpc (VHD) output only.");
        }

        if (options.Fixed && options.Format is not (ImageFormat.Vhdx or ImageFormat.Vpc or ImageFormat.Vdi))
        {
            throw Invalid(path, $"{options.Format.ToQemuName()} images have no fixed variant; vhdx, vpc and vdi have.");
        }

        if (options.Encrypt && options.Format is not (ImageFormat.Qcow2 or ImageFormat.Raw))
        {
            throw Invalid(path, $"{options.Format.ToQemuName()} output cannot be encrypted; qcow2 and raw (a LUKS file) can.");
        }

        if (options.Encrypt && options.KeyBytes is not (32 or 48 or 64))
        {
            throw Invalid(path, $"A LUKS key of {options.KeyBytes} bytes is not supported (32, 48 or 64).");
        }

        return options.Format switch
        {
            ImageFormat.Qcow2 => MeasureQcow2(source, size, options, progress, cancellationToken),
            ImageFormat.Raw when options.Encrypt => MeasureLuks(source, size, options),
            ImageFormat.Raw => MeasureRaw(source, size),
            ImageFormat.Vhdx or ImageFormat.Vpc or ImageFormat.Vdi => MeasureBlocks(source, size, options, progress, cancellationToken),
            _ => throw new KvmStorageException(ErrorKind.NotSupported, MeasureErrorIds.MeasureNotSupported, $"{options.Format.ToQemuName()} output cannot be measured (qemu-img measure cannot either); measure qcow2, raw, vhdx, vpc or vdi.", path),
        };
    }

    /// <summary>
    /// qemu's qcow2_calc_prealloc_size: a header cluster, every L2 table and the L1 table of a fully mapped image, the
    /// refcount structures that count all of it, and the data.
    /// </summary>
    internal static ulong Qcow2FullSize(ulong virtualSize, ulong clusterSize, int refcountBits, bool extendedL2)
    {
        ulong entryBytes = extendedL2 ? 16UL : 8UL;
        ulong aligned = RoundUp(virtualSize, clusterSize);
        ulong meta = clusterSize;
        ulong l2Entries = RoundUp(aligned / clusterSize, clusterSize / entryBytes);
        meta += l2Entries * entryBytes;
        ulong l1Entries = RoundUp(l2Entries * entryBytes / clusterSize, clusterSize / 8);
        meta += l1Entries * 8;
        meta += RefcountMetadataSize((meta + aligned) / clusterSize, clusterSize, refcountBits);
        return meta + aligned;
    }

    /// <summary>qemu's qcow2_refcount_metadata_size: the fixed point where the refcount blocks and table also count themselves.</summary>
    internal static ulong RefcountMetadataSize(ulong clusters, ulong clusterSize, int refcountBits)
    {
        ulong blocksPerTableCluster = clusterSize / 8;
        ulong refcountsPerBlock = clusterSize * 8 / (ulong)refcountBits;
        ulong table = 0, blocks = 0, n = 0, last;
        do
        {
            last = n;
            blocks = DivRoundUp(clusters + table + blocks, refcountsPerBlock);
            table = DivRoundUp(blocks, blocksPerTableCluster);
            n = clusters + blocks + table;
        }
        while (n != last);

        return (blocks + table) * clusterSize;
    }

    private static ImageMeasurement MeasureQcow2(IBlockReader? source, ulong? size, MeasureOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        string path = source?.Info.Path ?? string.Empty;
        int version = options.Compat switch
        {
            "1.1" or "v3" => 3,
            "0.10" or "v2" => 2,
            _ => throw Invalid(path, $"Unknown compatibility level '{options.Compat}' (use 1.1 or 0.10)."),
        };
        ulong cs = options.ClusterSize ?? 65536;
        if (cs < 512 || cs > 2 * 1024 * 1024 || !BitOperations.IsPow2(cs))
        {
            throw Invalid(path, "The cluster size must be a power of two from 512 bytes to 2 MiB.");
        }

        if (options.ExtendedL2 && cs < 16384)
        {
            throw Invalid(path, "Extended L2 entries need clusters of at least 16 KiB.");
        }

        if (options.ExtendedL2 && version < 3)
        {
            throw Invalid(path, "Extended L2 entries need compat 1.1.");
        }

        int bits = options.RefcountBits;
        if (bits < 1 || bits > 64 || !BitOperations.IsPow2(bits))
        {
            throw Invalid(path, "The refcount width must be a power of two from 1 to 64 bits.");
        }

        if (version < 3 && bits != 16)
        {
            throw Invalid(path, "Refcount widths other than 16 bits need compat 1.1.");
        }

        ulong entryBytes = options.ExtendedL2 ? 16UL : 8UL;
        ulong luksPayload = options.Encrypt ? RoundUp(LuksHeaderBytes(options.KeyBytes), cs) : 0;
        ulong virtualSize = RoundUp(source?.Size ?? size!.Value, cs);
        if (DivRoundUp(virtualSize / cs, cs / entryBytes) * entryBytes > MaxL1Bytes)
        {
            throw Invalid(path, "The image size is too large for this cluster size (try a larger cluster size).");
        }

        ulong required = 0;
        if (source is not null)
        {
            // With a backing file nothing says how much of it the new image could share: every cluster counts.
            required = options.HasBackingFile ? virtualSize : DataClusters(source, cs, progress, cancellationToken) * cs;
        }

        if (options.Preallocation is Preallocation.Full or Preallocation.Falloc)
        {
            required = virtualSize;
        }

        ulong full = luksPayload + Qcow2FullSize(virtualSize, cs, bits, options.ExtendedL2);
        return new ImageMeasurement
        {
            Format = "qcow2",
            VirtualSize = source?.Size ?? (size!.Value + 511) / 512 * 512,
            FullyAllocatedBytes = full,

            // The metadata of the fully allocated image stays counted: an overestimate, as qemu's.
            RequiredBytes = full - virtualSize + required,
            BitmapsBytes = version >= 3 && source is not null && SourceKeepsBitmaps(source) ? BitmapsSize(source, cs) : null,
            QemuCompatible = true,
        };
    }

    private static ImageMeasurement MeasureRaw(IBlockReader? source, ulong? size)
    {
        ulong bytes = source?.Size ?? RoundUp(size!.Value, 512);
        return new ImageMeasurement { Format = "raw", VirtualSize = bytes, RequiredBytes = bytes, FullyAllocatedBytes = bytes, QemuCompatible = true };
    }

    private static ImageMeasurement MeasureLuks(IBlockReader? source, ulong? size, MeasureOptions options)
    {
        // block_crypto_measure takes a size asked for as it is, the input's in whole sectors.
        ulong bytes = source?.Size ?? size!.Value;
        ulong total = LuksHeaderBytes(options.KeyBytes) + bytes;
        return new ImageMeasurement { Format = "luks", VirtualSize = bytes, RequiredBytes = total, FullyAllocatedBytes = total, QemuCompatible = true };
    }

    /// <summary>The module's own vhdx, vpc and vdi writers: their metadata plus every block that holds data (the whole layout when fixed).</summary>
    private static ImageMeasurement MeasureBlocks(IBlockReader? source, ulong? size, MeasureOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        string path = source?.Info.Path ?? string.Empty;
        ulong requested = source?.Size ?? size!.Value;
        KvmStorageException Bad(string message) => Invalid(path, message);
        (ulong virtualSize, ulong blockSize, ulong empty, ulong full, ulong perBlock) = options.Format switch
        {
            ImageFormat.Vhdx => Vhdx(VhdxLayout.For(requested, options.ClusterSize, options.Fixed, path, Bad)),
            ImageFormat.Vpc => Vpc(CheckBlock(options, VpcLayout.BlockSize, path, () => VpcLayout.For(requested, options.Fixed, options.ForceSize, path))),
            _ => Vdi(CheckBlock(options, VdiLayout.BlockSize, path, () => VdiLayout.For(requested, options.Fixed, path))),
        };
        ulong required = options.Fixed || source is null ? empty : empty + (DataClusters(source, blockSize, progress, cancellationToken) * perBlock);
        return new ImageMeasurement
        {
            Format = options.Format.ToQemuName(),
            VirtualSize = virtualSize,
            RequiredBytes = required,
            FullyAllocatedBytes = full,
            QemuCompatible = false,
        };

        static (ulong, ulong, ulong, ulong, ulong) Vhdx(VhdxLayout l) => (l.VirtualSize, l.BlockSize, l.EmptyLength, l.FullLength, l.BlockSize);

        static (ulong, ulong, ulong, ulong, ulong) Vpc(VpcLayout l) => (l.VirtualSize, VpcLayout.BlockSize, l.EmptyLength, l.FullLength, VpcLayout.BitmapSize + VpcLayout.BlockSize);

        static (ulong, ulong, ulong, ulong, ulong) Vdi(VdiLayout l) => (l.VirtualSize, VdiLayout.BlockSize, l.EmptyLength, l.FullLength, VdiLayout.BlockSize);
    }

    private static T CheckBlock<T>(MeasureOptions options, uint blockSize, string path, Func<T> layout) =>
        options.ClusterSize is { } cs && cs != blockSize
            ? throw Invalid(path, $"{options.Format.ToQemuName()} images have {blockSize / (1024 * 1024)} MiB blocks; the block size cannot be {cs}.")
            : layout();

    /// <summary>
    /// qcow2_measure's walk of the input: the clusters of <paramref name="unit"/> bytes that hold data anywhere in the
    /// chain (zeros, and what no image of the chain allocates, need none).
    /// </summary>
    private static ulong DataClusters(IBlockReader source, ulong unit, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ulong clusters = 0;
        ulong counted = 0;
        foreach (MapExtent e in ImageMapper.Map(source, 0, null, progress, cancellationToken))
        {
            if (!e.Data || e.Zero || !e.Present)
            {
                continue;
            }

            ulong first = Math.Max(e.Start / unit, counted);
            ulong end = DivRoundUp(e.End, unit);
            if (end > first)
            {
                clusters += end - first;
                counted = end;
            }
        }

        return clusters;
    }

    /// <summary>qemu's qcrypto_block_calculate_payload_offset for LUKS: the header and eight key slots of anti-forensic material.</summary>
    private static ulong LuksHeaderBytes(int keyBytes) => LuksHeader.LayoutSector((uint)keyBytes, LuksHeader.SlotCount) * 512UL;

    /// <summary>bdrv_supports_persistent_dirty_bitmap: only a qcow2 v3 input keeps bitmaps.</summary>
    private static bool SourceKeepsBitmaps(IBlockReader source) => source.Info.ImageFormat == ImageFormat.Qcow2 && source.Info.Qcow2 is { Version: >= 3 };

    /// <summary>
    /// qemu's qcow2_get_persistent_dirty_bitmap_size: each bitmap of the input as if fully allocated in clusters of the
    /// new image, its table, and the directory entries, all read from the input's bitmaps extension.
    /// </summary>
    private static ulong BitmapsSize(IBlockReader source, ulong cs)
    {
        string path = source.Info.Path;
        using SafeFileHandleScope file = new(path);
        byte[] head = file.Read(0, (int)Math.Min(file.Length, 4096));
        if (head.Length < 72)
        {
            return 0;
        }

        int clusterBits = (int)BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(20));
        ulong headerLength = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(100));
        ulong cluster = clusterBits is >= 9 and <= 21 ? 1UL << clusterBits : 0;
        if (cluster == 0 || headerLength < 104 || headerLength >= cluster)
        {
            return 0;
        }

        byte[] clusterZero = file.Read(0, (int)Math.Min(file.Length, cluster));
        ulong? directoryOffset = null;
        ulong directorySize = 0;
        uint count = 0;
        for (ulong at = (headerLength + 7) & ~7UL; at + 8 <= (ulong)clusterZero.Length;)
        {
            uint magic = BinaryPrimitives.ReadUInt32BigEndian(clusterZero.AsSpan((int)at));
            uint length = BinaryPrimitives.ReadUInt32BigEndian(clusterZero.AsSpan((int)at + 4));
            if (magic == 0 || at + 8 + length > (ulong)clusterZero.Length)
            {
                break;
            }

            if (magic == 0x23852875 && length >= 24)
            {
                ReadOnlySpan<byte> e = clusterZero.AsSpan((int)at + 8);
                count = BinaryPrimitives.ReadUInt32BigEndian(e);
                directorySize = BinaryPrimitives.ReadUInt64BigEndian(e[8..]);
                directoryOffset = BinaryPrimitives.ReadUInt64BigEndian(e[16..]);
            }

            at += (8 + length + 7) & ~7UL;
        }

        ulong total = 0;
        ulong directoryBytes = 0;
        if (directoryOffset is { } offset && directorySize is > 0 and <= 64 * 1024 * 1024 && offset + directorySize <= file.Length)
        {
            byte[] directory = file.Read(offset, (int)directorySize);
            int pos = 0;
            for (uint i = 0; i < count && pos + 24 <= directory.Length; i++)
            {
                ReadOnlySpan<byte> entry = directory.AsSpan(pos);
                int granularityBits = entry[17];
                ushort nameSize = BinaryPrimitives.ReadUInt16BigEndian(entry[18..]);
                uint extraSize = BinaryPrimitives.ReadUInt32BigEndian(entry[20..]);
                if (granularityBits is < 9 or > 31)
                {
                    break;
                }

                ulong bytesNeeded = DivRoundUp(DivRoundUp(source.Size, 1UL << granularityBits), 8);
                ulong bitmapClusters = DivRoundUp(bytesNeeded, cs);
                total += (bitmapClusters * cs) + RoundUp(bitmapClusters * 8, cs);

                // As qemu counts the new image's directory: the entry with its name, no extra data.
                directoryBytes += RoundUp(24UL + nameSize, 8);
                ulong next = (ulong)pos + RoundUp(24UL + nameSize + extraSize, 8);
                if (next > (ulong)directory.Length)
                {
                    break;
                }

                pos = (int)next;
            }
        }

        return total + RoundUp(directoryBytes, cs);
    }

    private static KvmStorageException Invalid(string path, string message) =>
        new(ErrorKind.InvalidArgument, MeasureErrorIds.InvalidMeasureOptions, message, path);

    private static ulong RoundUp(ulong value, ulong unit) => DivRoundUp(value, unit) * unit;

    private static ulong DivRoundUp(ulong value, ulong unit) => (value + unit - 1) / unit;

    /// <summary>A read-only handle on the input, for the bitmaps extension the block layer does not read.</summary>
    private sealed class SafeFileHandleScope(string path) : IDisposable
    {
        private readonly Microsoft.Win32.SafeHandles.SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);

        public ulong Length => (ulong)RandomAccess.GetLength(handle);

        public byte[] Read(ulong offset, int length)
        {
            byte[] buffer = new byte[length];
            IO.PositionalFile.ReadZeroPadded(handle, buffer, offset);
            return buffer;
        }

        public void Dispose() => handle.Dispose();
    }
}
