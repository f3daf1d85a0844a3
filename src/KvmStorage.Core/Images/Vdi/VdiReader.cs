using Microsoft.Win32.SafeHandles;
using static KvmStorage.Core.Images.ForeignImageFile;

namespace KvmStorage.Core.Images.Vdi;

/// <summary>VirtualBox VDI, detected by the signature at 0x40 (the text banner varies by creator; qemu block/vdi.c ignores it).</summary>
public sealed class VdiReader : IImageFormatReader
{
    private const uint Signature = 0xBEDA107F;
    private const uint Version11 = 0x00010001;
    private const uint DefaultBlockSize = 1024 * 1024;
    private const uint MaxBlocksInImage = uint.MaxValue / sizeof(uint);

    public ImageFormat Format => ImageFormat.Vdi;

    public int Priority => 30;

    public bool Probe(ImageProbe probe)
    {
        ArgumentNullException.ThrowIfNull(probe);
        return probe.Head.Length >= VdiHeader.Length && VdiHeader.Parse(probe.Head).Signature == Signature;
    }

    public ImageInfo ReadInfo(SafeFileHandle handle, ImageProbe probe, ulong actualSize)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(probe);
        string path = Path.GetFullPath(probe.Path);
        ReadOnlySpan<byte> h = ReadExactly(handle, path, probe.FileLength, 0, VdiHeader.Length, "VDI header");
        (uint signature, uint version, uint bmapOffset, uint dataOffset, uint sectorSize, ulong diskSize, uint blockSize, _, uint blocksInImage, _) = VdiHeader.Parse(h);
        ReadOnlySpan<byte> linkUuid = h.Slice(0x1A8, 16);
        ReadOnlySpan<byte> parentUuid = h.Slice(0x1B8, 16);

        // 'VBoxManage convert' can write odd disk sizes; qemu rounds them up to a sector.
        if (diskSize % 512 != 0)
        {
            if (diskSize > ulong.MaxValue - 511)
            {
                throw Invalid(ForeignFormatErrorIds.VdiHeaderInvalid, path, "disk size is out of range.");
            }

            diskSize = (diskSize + 511) / 512 * 512;
        }

        string? problem =
            signature != Signature ? $"bad signature {signature:x8}" :
            version != Version11 ? $"unsupported version {version >> 16}.{version & 0xffff}" :
            bmapOffset % 512 != 0 ? "unaligned block map offset" :
            dataOffset % 512 != 0 ? "unaligned data offset" :
            sectorSize != 512 ? $"sector size {sectorSize} is not 512" :
            blockSize != DefaultBlockSize ? $"block size {blockSize} is not 1 MiB" :
            diskSize > (ulong)blocksInImage * blockSize ? $"disk size {diskSize} exceeds the block map's room ({(ulong)blocksInImage * blockSize})" :
            linkUuid.ContainsAnyExcept((byte)0) ? "non-null link UUID" :
            parentUuid.ContainsAnyExcept((byte)0) ? "non-null parent UUID (differencing images are not supported)" :
            blocksInImage > MaxBlocksInImage ? $"too many blocks {blocksInImage}" :
            null;
        if (problem is not null)
        {
            throw Invalid(ForeignFormatErrorIds.VdiHeaderInvalid, path, $"unsupported VDI image ({problem}).");
        }

        return new ImageInfo
        {
            // Image type 2 is VirtualBox's fixed (qemu's static) image; 1 a normal, dynamic one.
            DiskType = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(h[0x4C..]) == 2 ? DiskType.Fixed : DiskType.Dynamic,
            LogicalSectorSize = sectorSize,
            Path = path,
            ImageFormat = ImageFormat.Vdi,
            VirtualSize = diskSize,
            ActualSize = actualSize,
            FileLength = probe.FileLength,
            ClusterSize = blockSize,
        };
    }
}
