using System.Buffers.Binary;

namespace KvmStorage.Core.Images.Block;

/// <summary>
/// VHDX (MS-VHDX 2.5 "BAT"): payload block entries interleaved with one sector-bitmap entry per chunk.
/// The inspector has already validated headers, region table and metadata; this reads the BAT.
/// </summary>
internal sealed class VhdxLayer : ImageLayer
{
    private const ulong Mib = 1024 * 1024;
    private const int MaxBatBytes = 64 * 1024 * 1024;
    private const ulong StateNotPresent = 0;
    private const ulong StateUndefined = 1;
    private const ulong StateZero = 2;
    private const ulong StateUnmapped = 3;
    private const ulong StateFullyPresent = 6;
    private const ulong StatePartiallyPresent = 7;

    private static readonly Guid BatRegion = new("2DC27766-F623-4200-9D64-115E9BFD4A08");
    private static readonly Guid MetadataRegion = new("8B7CA206-4790-4B9A-B8FE-575F050F886E");
    private static readonly Guid LogicalSectorSize = new("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");

    private readonly ulong[] _bat;
    private readonly ulong _blockSize;
    private readonly ulong _chunkRatio;

    private VhdxLayer(HostFile file, ulong size, ulong[] bat, ulong blockSize, ulong chunkRatio)
        : base(file, size)
    {
        _bat = bat;
        _blockSize = blockSize;
        _chunkRatio = chunkRatio;
    }

    public static VhdxLayer Open(HostFile file, ImageInfo info)
    {
        CheckLog(file);
        byte[] regions = file.ReadMetadata(192 * 1024, 64 * 1024, "VHDX region table");
        uint count = Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(regions.AsSpan(8)), 2047);
        ulong batOffset = 0, batLength = 0, metadataOffset = 0;
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> e = regions.AsSpan(16 + (i * 32), 32);
            var guid = new Guid(e[..16]);
            if (guid == BatRegion)
            {
                batOffset = BinaryPrimitives.ReadUInt64LittleEndian(e[16..]);
                batLength = BinaryPrimitives.ReadUInt32LittleEndian(e[24..]);
            }
            else if (guid == MetadataRegion)
            {
                metadataOffset = BinaryPrimitives.ReadUInt64LittleEndian(e[16..]);
            }
        }

        ulong blockSize = info.ClusterSize ?? 0;
        ulong logicalSector = ReadLogicalSectorSize(file, metadataOffset);
        if (batOffset == 0 || blockSize == 0 || logicalSector == 0)
        {
            throw BlockErrors.Mapping(file.Path, "the VHDX BAT, block size or logical sector size is missing.");
        }

        // MS-VHDX 2.5.1: one sector bitmap block covers 2^23 sectors.
        ulong chunkRatio = (1UL << 23) * logicalSector / blockSize;
        if (chunkRatio == 0)
        {
            throw BlockErrors.Mapping(file.Path, "the VHDX chunk ratio is zero.");
        }

        ulong blocks = (info.VirtualSize + blockSize - 1) / blockSize;
        ulong entries = blocks == 0 ? 0 : blocks + ((blocks - 1) / chunkRatio);
        if (entries * 8 > batLength)
        {
            throw BlockErrors.Mapping(file.Path, $"the VHDX BAT region ({batLength} bytes) is too small for {blocks} blocks.");
        }

        if (entries * 8 > MaxBatBytes)
        {
            throw BlockErrors.Invalid(BlockErrorIds.TableTooLarge, file.Path, $"the VHDX BAT ({entries} entries) is too large.");
        }

        byte[] raw = file.ReadMetadata(batOffset, (int)(entries * 8), "VHDX BAT");
        ulong[] bat = new ulong[entries];
        for (int i = 0; i < bat.Length; i++)
        {
            bat[i] = BinaryPrimitives.ReadUInt64LittleEndian(raw.AsSpan(i * 8));
        }

        return new VhdxLayer(file, info.VirtualSize, bat, blockSize, chunkRatio);
    }

    public override LayerRun Map(ulong offset, ulong maxLength)
    {
        ulong block = offset / _blockSize;
        ulong inBlock = offset % _blockSize;
        (RunKind kind, ulong host) = Classify(block);
        ulong length = _blockSize - inBlock;
        ulong expected = host + _blockSize;
        ulong blocks = (Size + _blockSize - 1) / _blockSize;
        for (ulong b = block + 1; length < maxLength && b < blocks; b++)
        {
            (RunKind nextKind, ulong nextHost) = Classify(b);
            if (nextKind != kind || (kind == RunKind.Data && nextHost != expected))
            {
                break;
            }

            length += _blockSize;
            expected += _blockSize;
        }

        return new LayerRun(Math.Min(length, maxLength), kind, kind == RunKind.Data ? host + inBlock : 0);
    }

    private (RunKind Kind, ulong Host) Classify(ulong block)
    {
        ulong entry = _bat[block + (block / _chunkRatio)];
        ulong state = entry & 7;
        switch (state)
        {
            case StateNotPresent:
            case StateUndefined:
                return (RunKind.Unallocated, 0);
            case StateZero:
            case StateUnmapped:
                return (RunKind.Zero, 0);
            case StateFullyPresent:
                ulong host = (entry >> 20) * Mib;
                if (host == 0)
                {
                    throw BlockErrors.Mapping(File.Path, $"BAT entry of block {block} is present at file offset 0.");
                }

                return (RunKind.Data, host);
            case StatePartiallyPresent:
                throw BlockErrors.NotSupported(BlockErrorIds.FormatNotReadable, File.Path, "partially present blocks (differencing VHDX) are not supported.");
            default:
                throw BlockErrors.Mapping(File.Path, $"BAT entry of block {block} has the invalid state {state}.");
        }
    }

    /// <summary>A log that still holds entries must be replayed before the BAT can be trusted (MS-VHDX 2.3).</summary>
    private static void CheckLog(HostFile file)
    {
        byte[] h1 = file.ReadMetadata(64 * 1024, 4096, "VHDX header 1");
        byte[] h2 = file.ReadMetadata(128 * 1024, 4096, "VHDX header 2");
        bool v1 = h1.AsSpan().StartsWith("head"u8);
        bool v2 = h2.AsSpan().StartsWith("head"u8);
        byte[] current = v1 && v2
            ? (BinaryPrimitives.ReadUInt64LittleEndian(h2.AsSpan(8)) > BinaryPrimitives.ReadUInt64LittleEndian(h1.AsSpan(8)) ? h2 : h1)
            : (v2 ? h2 : h1);
        if (current.AsSpan(48, 16).ContainsAnyExcept((byte)0))
        {
            throw BlockErrors.NotSupported(BlockErrorIds.VhdxLogNotEmpty, file.Path, "the VHDX log must be replayed first (open the image read-write in qemu once).");
        }
    }

    private static ulong ReadLogicalSectorSize(HostFile file, ulong metadataOffset)
    {
        if (metadataOffset == 0)
        {
            return 0;
        }

        byte[] table = file.ReadMetadata(metadataOffset, 64 * 1024, "VHDX metadata table");
        int count = Math.Min(BinaryPrimitives.ReadUInt16LittleEndian(table.AsSpan(10)), (ushort)2047);
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> e = table.AsSpan(32 + (i * 32), 32);
            if (new Guid(e[..16]) == LogicalSectorSize)
            {
                uint itemOffset = BinaryPrimitives.ReadUInt32LittleEndian(e[16..]);
                byte[] item = file.ReadMetadata(metadataOffset + itemOffset, 4, "VHDX logical sector size");
                return BinaryPrimitives.ReadUInt32LittleEndian(item);
            }
        }

        return 0;
    }
}
