using System.Buffers.Binary;
using KvmStorage.Core.Images.Check;

namespace KvmStorage.Core.Images.Vdi;

/// <summary>qemu's <c>vdi_co_check</c>: each allocated block index below the block count and used once; the count matches the header.</summary>
internal static class VdiChecker
{
    public static void Walk(AllocationTableCheck check)
    {
        VdiHeader h = VdiHeader.Parse(check.Read(0, VdiHeader.Length));
        uint blocks = h.BlocksInImage;
        byte[] map = check.Read(h.BlockMapOffset, (ulong)blocks * 4);
        check.Total = blocks;
        var owners = new Dictionary<ulong, ulong>();
        uint counted = 0;
        for (uint block = 0; block < blocks; block++)
        {
            uint entry = BinaryPrimitives.ReadUInt32LittleEndian(map.AsSpan((int)(block * 4)));
            if (entry is VdiHeader.Unallocated or VdiHeader.Discarded)
            {
                continue;
            }

            ulong entryAt = h.BlockMapOffset + ((ulong)block * 4);
            if (entry >= blocks)
            {
                check.Allocated++;
                check.Corruption(entryAt, ImageCorruptionKind.InvalidTableEntry, $"block {block} maps to index {entry}, past the {blocks} blocks of the image.");
                continue;
            }

            counted++;
            check.Claim(owners, entryAt, h.DataOffset + ((ulong)entry * (h.BlockSize + (ulong)h.BlockExtra)), h.BlockSize, block, "block");
        }

        if (counted != h.BlocksAllocated)
        {
            check.Corruption(VdiHeader.BlocksAllocatedOffset, ImageCorruptionKind.InvalidTableEntry, $"the header counts {h.BlocksAllocated} allocated blocks, the block map {counted}.");
        }
    }
}
