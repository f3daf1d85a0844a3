using System.Buffers.Binary;

namespace KvmStorage.Core.Images.Block;

/// <summary>VirtualBox VDI (qemu block/vdi.c): a block map of 32-bit entries, 0xFFFFFFFF unallocated, 0xFFFFFFFE discarded.</summary>
internal sealed class VdiLayer : ImageLayer
{
    private const uint Unallocated = 0xFFFFFFFF;
    private const uint Discarded = 0xFFFFFFFE;
    private const int MaxMapBytes = 64 * 1024 * 1024;

    private readonly uint[] _map;
    private readonly ulong _blockSize;
    private readonly ulong _dataOffset;

    private VdiLayer(HostFile file, ulong size, uint[] map, ulong blockSize, ulong dataOffset)
        : base(file, size)
    {
        _map = map;
        _blockSize = blockSize;
        _dataOffset = dataOffset;
    }

    public static VdiLayer Open(HostFile file, ImageInfo info)
    {
        byte[] h = file.ReadMetadata(0, 512, "VDI header");
        uint bmapOffset = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(0x154));
        uint dataOffset = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(0x158));
        uint blockSize = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(0x178));
        uint blocksInImage = BinaryPrimitives.ReadUInt32LittleEndian(h.AsSpan(0x180));
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

        byte[] raw = file.ReadMetadata(bmapOffset, (int)(blocks * 4), "VDI block map");
        uint[] map = new uint[blocks];
        for (int i = 0; i < map.Length; i++)
        {
            map[i] = BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan(i * 4));
        }

        return new VdiLayer(file, info.VirtualSize, map, blockSize, dataOffset);
    }

    public override LayerRun Map(ulong offset, ulong maxLength)
    {
        ulong block = offset / _blockSize;
        ulong inBlock = offset % _blockSize;
        (RunKind kind, ulong host) = Classify(_map[block], block);
        ulong length = _blockSize - inBlock;
        ulong expected = host + _blockSize;
        for (ulong b = block + 1; length < maxLength && b < (ulong)_map.Length; b++)
        {
            (RunKind nextKind, ulong nextHost) = Classify(_map[b], b);
            if (nextKind != kind || (kind == RunKind.Data && nextHost != expected))
            {
                break;
            }

            length += _blockSize;
            expected += _blockSize;
        }

        return new LayerRun(Math.Min(length, maxLength), kind, kind == RunKind.Data ? host + inBlock : 0);
    }

    private (RunKind Kind, ulong Host) Classify(uint entry, ulong block) => entry switch
    {
        Unallocated => (RunKind.Unallocated, 0),
        Discarded => (RunKind.Zero, 0),
        _ => (RunKind.Data, _dataOffset + ((ulong)entry * _blockSize)),
    };
}
