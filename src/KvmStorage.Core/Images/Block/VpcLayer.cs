using System.Buffers.Binary;

namespace KvmStorage.Core.Images.Block;

/// <summary>
/// VHD (qemu block/vpc.c): fixed images are raw data followed by the footer; dynamic ones map blocks through
/// the BAT, each block a sector bitmap followed by its data. Like qemu, reads ignore the bitmap.
/// </summary>
internal sealed class VpcLayer : ImageLayer
{
    private const uint TypeFixed = 2;
    private const int MaxBatBytes = 64 * 1024 * 1024;

    private readonly uint[] _bat;
    private readonly ulong _blockSize;
    private readonly ulong _bitmapSize;

    private VpcLayer(HostFile file, ulong size, uint[] bat, ulong blockSize)
        : base(file, size)
    {
        _bat = bat;
        _blockSize = blockSize;
        _bitmapSize = ((blockSize / (8 * 512)) + 511) & ~511UL;
    }

    public static ImageLayer Open(HostFile file, ImageInfo info)
    {
        byte[] footer = file.ReadMetadata(0, 512, "VHD footer copy");
        if (!footer.AsSpan().StartsWith("conectix"u8))
        {
            footer = file.ReadMetadata(file.Length - 512, 512, "VHD footer");
        }

        if (BinaryPrimitives.ReadUInt32BigEndian(footer.AsSpan(60)) == TypeFixed)
        {
            // The footer follows the data; the guest never sees it.
            ulong dataLength = file.Length >= 512 ? file.Length - 512 : 0;
            return new BoundedRawLayer(file, info.VirtualSize, dataLength);
        }

        ulong dynamicOffset = BinaryPrimitives.ReadUInt64BigEndian(footer.AsSpan(16));
        byte[] d = file.ReadMetadata(dynamicOffset, 1024, "VHD dynamic disk header");
        ulong tableOffset = BinaryPrimitives.ReadUInt64BigEndian(d.AsSpan(16));
        uint maxEntries = BinaryPrimitives.ReadUInt32BigEndian(d.AsSpan(28));
        uint blockSize = BinaryPrimitives.ReadUInt32BigEndian(d.AsSpan(32));
        if (blockSize < 512 || (blockSize & (blockSize - 1)) != 0)
        {
            throw BlockErrors.Mapping(file.Path, $"the VHD block size {blockSize} is invalid.");
        }

        ulong needed = Math.Min(maxEntries, (info.VirtualSize + blockSize - 1) / blockSize);
        if (needed * 4 > MaxBatBytes)
        {
            throw BlockErrors.Invalid(BlockErrorIds.TableTooLarge, file.Path, $"the VHD block allocation table ({needed} entries) is too large.");
        }

        byte[] raw = file.ReadMetadata(tableOffset, (int)(needed * 4), "VHD block allocation table");
        uint[] bat = new uint[needed];
        for (int i = 0; i < bat.Length; i++)
        {
            bat[i] = BinaryPrimitives.ReadUInt32BigEndian(raw.AsSpan(i * 4));
        }

        return new VpcLayer(file, info.VirtualSize, bat, blockSize);
    }

    public override LayerRun Map(ulong offset, ulong maxLength)
    {
        ulong block = offset / _blockSize;
        ulong inBlock = offset % _blockSize;
        ulong length = Math.Min(maxLength, _blockSize - inBlock);
        if (block >= (ulong)_bat.Length || _bat[block] == uint.MaxValue)
        {
            // Merge unallocated blocks: a converter skips them in one step.
            ulong b = block + 1;
            while (length < maxLength && (b >= (ulong)_bat.Length || _bat[b] == uint.MaxValue))
            {
                length = Math.Min(maxLength, length + _blockSize);
                b++;
            }

            return new LayerRun(length, RunKind.Unallocated);
        }

        ulong host = ((ulong)_bat[block] * 512) + _bitmapSize + inBlock;
        return new LayerRun(length, RunKind.Data, host);
    }
}

/// <summary>A raw region at the start of a file, of <paramref name="dataLength"/> bytes: beyond it, zeros.</summary>
internal sealed class BoundedRawLayer(HostFile file, ulong size, ulong dataLength) : ImageLayer(file, size)
{
    public override LayerRun Map(ulong offset, ulong maxLength)
    {
        if (offset >= dataLength)
        {
            return new LayerRun(maxLength, RunKind.Zero);
        }

        (bool data, ulong length) = File.Probe(offset, Math.Min(maxLength, dataLength - offset));
        return data ? new LayerRun(length, RunKind.Data, offset) : new LayerRun(length, RunKind.Zero);
    }
}
