using System.Buffers.Binary;
using KvmStorage.Core.Images.Check;

namespace KvmStorage.Core.Images.Vhdx;

/// <summary>VHDX payload blocks (fully or partially present) inside the file and never shared.</summary>
internal static class VhdxChecker
{
    public static void Walk(AllocationTableCheck check)
    {
        ulong batOffset = 0, batLength = 0, metadataOffset = 0, metadataLength = 0;
        foreach (VhdxTables.Region region in VhdxTables.Regions(check.Read(VhdxTables.RegionTableOffset, VhdxTables.RegionTableLength)))
        {
            if (region.Id == VhdxTables.BatRegion)
            {
                (batOffset, batLength) = (region.Offset, region.Length);
            }
            else if (region.Id == VhdxTables.MetadataRegion)
            {
                (metadataOffset, metadataLength) = (region.Offset, region.Length);
            }
        }

        if (batLength == 0 || metadataLength < 32)
        {
            return;
        }

        byte[] metadata = check.Read(metadataOffset, Math.Min(metadataLength, 1024 * 1024));
        uint blockSize = 0, sectorSize = 512;
        ulong virtualSize = 0;
        foreach (VhdxTables.MetadataItem item in VhdxTables.MetadataItems(metadata))
        {
            if (item.Offset + 8UL > (ulong)metadata.Length)
            {
                continue;
            }

            ReadOnlySpan<byte> value = metadata.AsSpan((int)item.Offset);
            if (item.Id == VhdxTables.FileParameters)
            {
                blockSize = BinaryPrimitives.ReadUInt32LittleEndian(value);
            }
            else if (item.Id == VhdxTables.VirtualDiskSize)
            {
                virtualSize = BinaryPrimitives.ReadUInt64LittleEndian(value);
            }
            else if (item.Id == VhdxTables.LogicalSectorSize)
            {
                sectorSize = BinaryPrimitives.ReadUInt32LittleEndian(value);
            }
        }

        if (blockSize == 0 || sectorSize == 0)
        {
            return;
        }

        ulong chunkRatio = VhdxTables.ChunkRatio(sectorSize, blockSize);
        ulong payloadBlocks = (virtualSize + blockSize - 1) / blockSize;
        check.Total = payloadBlocks;
        byte[] bat = check.Read(batOffset, batLength);
        var owners = new Dictionary<ulong, ulong>();
        ulong payload = 0;
        for (ulong k = 0; (k + 1) * 8 <= (ulong)bat.Length && payload < payloadBlocks; k++)
        {
            // Every (chunkRatio + 1)-th entry is a sector bitmap entry, not a payload block.
            if ((k + 1) % (chunkRatio + 1) == 0)
            {
                continue;
            }

            ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(bat.AsSpan((int)(k * 8)));
            ulong index = payload++;
            if (VhdxTables.BatState(entry) is not (VhdxTables.BlockFullyPresent or VhdxTables.BlockPartiallyPresent))
            {
                continue;
            }

            check.Claim(owners, batOffset + (k * 8), VhdxTables.BatOffset(entry), blockSize, index, "payload block");
        }
    }
}
