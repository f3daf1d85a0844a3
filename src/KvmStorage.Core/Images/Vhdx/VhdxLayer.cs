using System.Buffers.Binary;
using KvmStorage.Core.Images.Block;

namespace KvmStorage.Core.Images.Vhdx;

/// <summary>
/// VHDX (MS-VHDX 2.5 "BAT"): payload block entries interleaved with one sector-bitmap entry per chunk.
/// The inspector has already validated headers, region table and metadata; this reads the BAT.
/// </summary>
internal sealed class VhdxLayer : ImageLayer
{
    private const int MaxBatBytes = 64 * 1024 * 1024;

    private readonly ulong[] bat;
    private readonly ulong blockSize;
    private readonly ulong chunkRatio;

    private VhdxLayer(HostFile file, ulong size, ulong[] bat, ulong blockSize, ulong chunkRatio)
        : base(file, size)
    {
        this.bat = bat;
        this.blockSize = blockSize;
        this.chunkRatio = chunkRatio;
    }

    public static VhdxLayer Open(HostFile file, ImageInfo info)
    {
        CheckLog(file);
        byte[] regions = file.ReadMetadata(VhdxTables.RegionTableOffset, VhdxTables.RegionTableLength, "VHDX region table");
        ulong batOffset = 0, batLength = 0, metadataOffset = 0;
        foreach (VhdxTables.Region region in VhdxTables.Regions(regions))
        {
            if (region.Id == VhdxTables.BatRegion)
            {
                (batOffset, batLength) = (region.Offset, region.Length);
            }
            else if (region.Id == VhdxTables.MetadataRegion)
            {
                metadataOffset = region.Offset;
            }
        }

        ulong blockSize = info.ClusterSize ?? 0;
        ulong logicalSector = ReadLogicalSectorSize(file, metadataOffset);
        if (batOffset == 0 || blockSize == 0 || logicalSector == 0)
        {
            throw BlockErrors.Mapping(file.Path, "the VHDX BAT, block size or logical sector size is missing.");
        }

        ulong chunkRatio = VhdxTables.ChunkRatio(logicalSector, blockSize);
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

    public override LayerRun Map(ulong offset, ulong maxLength) =>
        LayerRun.OverBlocks(offset, maxLength, blockSize, (Size + blockSize - 1) / blockSize, Classify);

    private (RunKind Kind, ulong Host) Classify(ulong block)
    {
        ulong entry = bat[block + (block / chunkRatio)];
        ulong state = VhdxTables.BatState(entry);
        switch (state)
        {
            case VhdxTables.BlockNotPresent:
            case VhdxTables.BlockUndefined:
                return (RunKind.Unallocated, 0);
            case VhdxTables.BlockZero:
            case VhdxTables.BlockUnmapped:
                return (RunKind.Zero, 0);
            case VhdxTables.BlockFullyPresent:
                ulong host = VhdxTables.BatOffset(entry);
                if (host == 0)
                {
                    throw BlockErrors.Mapping(File.Path, $"BAT entry of block {block} is present at file offset 0.");
                }

                return (RunKind.Data, host);
            case VhdxTables.BlockPartiallyPresent:
                throw BlockErrors.NotSupported(BlockErrorIds.FormatNotReadable, File.Path, "partially present blocks (differencing VHDX) are not supported.");
            default:
                throw BlockErrors.Mapping(File.Path, $"BAT entry of block {block} has the invalid state {state}.");
        }
    }

    /// <summary>qemu's vhdx driver has no block status: the generic layer calls the whole disk data, at no offset.</summary>
    public override LayerStatus Status(ulong offset, ulong maxLength) => new(maxLength, Data: true);

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

        byte[] table = file.ReadMetadata(metadataOffset, VhdxTables.MetadataTableLength, "VHDX metadata table");
        foreach (VhdxTables.MetadataItem entry in VhdxTables.MetadataItems(table))
        {
            if (entry.Id == VhdxTables.LogicalSectorSize)
            {
                byte[] item = file.ReadMetadata(metadataOffset + entry.Offset, 4, "VHDX logical sector size");
                return BinaryPrimitives.ReadUInt32LittleEndian(item);
            }
        }

        return 0;
    }
}
