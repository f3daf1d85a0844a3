using System.Buffers.Binary;
using KvmStorage.Core.Images.Block;

namespace KvmStorage.Core.Images.Vpc;

/// <summary>
/// VHD (qemu block/vpc.c): fixed images are raw data followed by the footer; dynamic ones map blocks through
/// the BAT, each block a sector bitmap followed by its data. Like qemu, reads ignore the bitmap.
/// </summary>
internal sealed class VpcLayer : ImageLayer
{
    private const int MaxBatBytes = 64 * 1024 * 1024;

    private readonly uint[] bat;
    private readonly ulong blockSize;
    private readonly ulong bitmapSize;

    private VpcLayer(HostFile file, ulong size, uint[] bat, ulong blockSize)
        : base(file, size)
    {
        this.bat = bat;
        this.blockSize = blockSize;
        bitmapSize = VpcHeaders.BitmapSize(blockSize);
    }

    public static ImageLayer Open(HostFile file, ImageInfo info)
    {
        byte[] footer = file.ReadMetadata(0, VpcHeaders.FooterLength, "VHD footer copy");
        if (!footer.AsSpan().StartsWith(VpcHeaders.Cookie))
        {
            footer = file.ReadMetadata(file.Length - VpcHeaders.FooterLength, VpcHeaders.FooterLength, "VHD footer");
        }

        if (VpcHeaders.DiskType(footer) == VpcHeaders.TypeFixed)
        {
            // The footer follows the data; the guest never sees it.
            ulong dataLength = file.Length >= VpcHeaders.FooterLength ? file.Length - VpcHeaders.FooterLength : 0;
            return new BoundedRawLayer(file, info.VirtualSize, dataLength);
        }

        byte[] d = file.ReadMetadata(VpcHeaders.DynamicHeaderOffset(footer), VpcHeaders.DynamicHeaderLength, "VHD dynamic disk header");
        (ulong tableOffset, uint maxEntries, uint blockSize) = VpcHeaders.ReadDynamicHeader(d);
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
        ulong block = offset / blockSize;
        ulong inBlock = offset % blockSize;
        ulong length = Math.Min(maxLength, blockSize - inBlock);
        if (block >= (ulong)bat.Length || bat[block] == VpcHeaders.Unallocated)
        {
            // Merge unallocated blocks: a converter skips them in one step.
            ulong b = block + 1;
            while (length < maxLength && (b >= (ulong)bat.Length || bat[b] == VpcHeaders.Unallocated))
            {
                length = Math.Min(maxLength, length + blockSize);
                b++;
            }

            return new LayerRun(length, RunKind.Unallocated);
        }

        ulong host = ((ulong)bat[block] * 512) + bitmapSize + inBlock;
        return new LayerRun(length, RunKind.Data, host);
    }

    /// <summary>qemu's vpc reports a block that was never written as zeros (the driver has no backing file).</summary>
    public override LayerStatus Status(ulong offset, ulong maxLength)
    {
        LayerRun run = Map(offset, maxLength);
        return run.Kind == RunKind.Data ? LayerStatus.DataAt(run.Length, run.HostOffset) : new LayerStatus(run.Length, Zero: true);
    }
}
