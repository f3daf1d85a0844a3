using System.Buffers.Binary;
using KvmStorage.Core.Images.Block;

namespace KvmStorage.Core.Images.Vdi;

/// <summary>VirtualBox VDI (qemu block/vdi.c): a block map of 32-bit entries, 0xFFFFFFFF unallocated, 0xFFFFFFFE discarded.</summary>
internal sealed class VdiLayer : ImageLayer
{
    private const int MaxMapBytes = 64 * 1024 * 1024;

    private readonly uint[] map;
    private readonly ulong blockSize;
    private readonly ulong dataOffset;

    private VdiLayer(HostFile file, ulong size, uint[] map, ulong blockSize, ulong dataOffset)
        : base(file, size)
    {
        this.map = map;
        this.blockSize = blockSize;
        this.dataOffset = dataOffset;
    }

    public static VdiLayer Open(HostFile file, ImageInfo info)
    {
        VdiHeader header = VdiHeader.Parse(file.ReadMetadata(0, VdiHeader.Length, "VDI header"));
        uint blockSize = header.BlockSize;
        uint blocksInImage = header.BlocksInImage;
        if (blockSize == 0)
        {
            throw BlockErrors.Mapping(file.Path, "the VDI block size is zero.");
        }

        ulong blocks = (info.VirtualSize + blockSize - 1) / blockSize;
        if (blocks > blocksInImage)
        {
            throw BlockErrors.Mapping(file.Path, $"the VDI block map ({blocksInImage} entries) is too small for the disk size.");
        }

        if (blocks * 4 > MaxMapBytes)
        {
            throw BlockErrors.Invalid(BlockErrorIds.TableTooLarge, file.Path, $"the VDI block map ({blocks} entries) is too large.");
        }

        byte[] raw = file.ReadMetadata(header.BlockMapOffset, (int)(blocks * 4), "VDI block map");
        uint[] map = new uint[blocks];
        for (int i = 0; i < map.Length; i++)
        {
            map[i] = BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan(i * 4));
        }

        return new VdiLayer(file, info.VirtualSize, map, blockSize, header.DataOffset);
    }

    public override LayerRun Map(ulong offset, ulong maxLength) =>
        LayerRun.OverBlocks(offset, maxLength, blockSize, (ulong)map.Length, block => Classify(map[block]));

    /// <summary>qemu's vdi reports a block it has no data for as zeros (VDI images have no backing file).</summary>
    public override LayerStatus Status(ulong offset, ulong maxLength)
    {
        LayerRun run = Map(offset, maxLength);
        return run.Kind == RunKind.Data ? LayerStatus.DataAt(run.Length, run.HostOffset) : new LayerStatus(run.Length, Zero: true);
    }

    private (RunKind Kind, ulong Host) Classify(uint entry) => entry switch
    {
        VdiHeader.Unallocated => (RunKind.Unallocated, 0),
        VdiHeader.Discarded => (RunKind.Zero, 0),
        _ => (RunKind.Data, dataOffset + ((ulong)entry * blockSize)),
    };
}
