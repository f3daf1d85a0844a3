using System.Buffers.Binary;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;
using static KvmStorage.Core.Images.ForeignImageFile;

namespace KvmStorage.Core.Images.Vmdk;

/// <summary>
/// VMDK: hosted sparse extents ("KDMV": monolithicSparse, streamOptimized incl. the GD_AT_END footer),
/// old "COWD" extents, and text descriptors (monolithicFlat, twoGbMaxExtent*, vmfs...). Values follow
/// qemu's vmdk driver (block/vmdk.c) so that they match <c>qemu-img info</c>.
/// </summary>
public sealed partial class VmdkReader : IImageFormatReader
{
    private const uint MarkerEndOfStream = 0;
    private const uint MarkerFooter = 3;

    public ImageFormat Format => ImageFormat.Vmdk;

    public int Priority => 30;

    public bool Probe(ImageProbe probe)
    {
        ArgumentNullException.ThrowIfNull(probe);
        ReadOnlySpan<byte> head = probe.Head;
        if (head.Length < 4)
        {
            return false;
        }

        uint magic = BinaryPrimitives.ReadUInt32BigEndian(head);
        if (magic is VmdkSparseHeader.Magic or VmdkSparseHeader.Vmdk3Magic)
        {
            return true;
        }

        // qemu probes with the first 512 bytes only.
        return VmdkDescriptor.LooksLikeDescriptor(head[..Math.Min(head.Length, 512)]);
    }

    public ImageInfo ReadInfo(SafeFileHandle handle, ImageProbe probe, ulong actualSize)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(probe);
        string path = Path.GetFullPath(probe.Path);
        ulong length = probe.FileLength;
        if (length < 4)
        {
            throw Invalid(ForeignFormatErrorIds.VmdkHeaderInvalid, path, "the file is too small to be a VMDK image.");
        }

        byte[] first = ReadExactly(handle, path, length, 0, 4, "VMDK magic");
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(first);
        Layout layout;
        ulong descriptorOffset;
        if (magic is VmdkSparseHeader.Magic or VmdkSparseHeader.Vmdk3Magic)
        {
            Extent? extent = ReadSparseExtent(handle, path, length, topLevel: true, out Layout? embedded);
            if (embedded is not null)
            {
                // A sparse header with capacity 0 that points at a descriptor: qemu opens that descriptor instead.
                layout = embedded;
                descriptorOffset = 0x200;
            }
            else
            {
                layout = new Layout(extent!.Compressed ? "streamOptimized" : "monolithicSparse", [extent]);
                descriptorOffset = 0x200;
            }
        }
        else
        {
            byte[] text = ReadAtMost(handle, path, length, 0, VmdkDescriptor.MaxDescriptorFile, "VMDK descriptor");
            layout = ParseDescriptorFile(VmdkDescriptor.AsCString(text), path);
            descriptorOffset = 0;
        }

        // CID, parentCID and parentFileNameHint come from the first DESC_SIZE bytes at the descriptor offset (vmdk_read_cid, vmdk_parent_open).
        byte[] window = new byte[VmdkDescriptor.CidWindow];
        byte[] got = ReadAtMost(handle, path, length, descriptorOffset, VmdkDescriptor.CidWindow - 1, "VMDK descriptor");
        got.CopyTo(window, 0);
        string desc = VmdkDescriptor.AsCString(window);

        string? backing = null;
        int hint = desc.IndexOf("parentFileNameHint", StringComparison.Ordinal);
        if (hint >= 0)
        {
            int start = hint + "parentFileNameHint".Length + 2;
            int end = start <= desc.Length ? desc.IndexOf('"', start) : -1;
            if (end < 0 || end - start > 4095)
            {
                throw Invalid(ForeignFormatErrorIds.VmdkDescriptorInvalid, path, "parentFileNameHint is not a quoted name of at most 4095 bytes.");
            }

            backing = desc[start..end];
        }

        uint cid = VmdkDescriptor.ReadCid(desc, "CID") ?? throw Invalid(ForeignFormatErrorIds.VmdkDescriptorInvalid, path, "the descriptor has no CID.");
        uint parentCid = VmdkDescriptor.ReadCid(desc, "parentCID") ?? throw Invalid(ForeignFormatErrorIds.VmdkDescriptorInvalid, path, "the descriptor has no parentCID.");

        ulong sectors = 0;
        foreach (Extent e in layout.Extents)
        {
            sectors += e.Sectors;
            if (e.Sectors > long.MaxValue / 512 || sectors > long.MaxValue / 512)
            {
                throw Invalid(ForeignFormatErrorIds.VmdkExtentInvalid, path, "the extents add up to more than 2^63 bytes.");
            }
        }

        return new ImageInfo
        {
            Path = path,
            ImageFormat = ImageFormat.Vmdk,
            VirtualSize = sectors * 512,
            ActualSize = actualSize,
            FileLength = length,
            ClusterSize = ClusterSizeOf(layout.Extents),

            // Flat extents hold every sector in place; sparse ones allocate grains (qemu's vmdk create types).
            DiskType = layout.CreateType.Contains("Flat", StringComparison.OrdinalIgnoreCase) || layout.CreateType is "vmfs" or "vmfsRaw" or "fullDevice" or "partitionedDevice" ? DiskType.Fixed : DiskType.Dynamic,
            BackingFile = string.IsNullOrEmpty(backing) ? null : backing,
            FullBackingFile = string.IsNullOrEmpty(backing) ? null : ResolveNextTo(path, backing),
            BackingFormat = string.IsNullOrEmpty(backing) ? null : "vmdk",
            Vmdk = new VmdkDetails
            {
                CreateType = layout.CreateType,
                Cid = cid,
                ParentCid = parentCid,
                Extents = layout.Extents.Select(e => e.Path).ToArray(),
            },
        };
    }

    /// <summary>vmdk_co_get_info: a cluster size only when every extent is sparse with one grain size.</summary>
    private static uint? ClusterSizeOf(List<Extent> extents)
    {
        if (extents.Count == 0 || extents[0].GrainBytes is not uint grain)
        {
            return null;
        }

        foreach (Extent e in extents)
        {
            if (e.Flat || e.GrainBytes != grain || e.Compressed != extents[0].Compressed)
            {
                return null;
            }
        }

        return grain;
    }

    private static Layout ParseDescriptorFile(string desc, string path)
    {
        string createType = VmdkDescriptor.QuotedValue(desc, "createType", 128)
            ?? throw Invalid(ForeignFormatErrorIds.VmdkDescriptorInvalid, path, "invalid VMDK image descriptor (no createType).");
        if (!VmdkDescriptor.SupportedDescriptorCreateTypes.Contains(createType))
        {
            throw Invalid(ForeignFormatErrorIds.VmdkUnsupportedCreateType, path, $"unsupported VMDK image type '{createType}'.");
        }

        List<VmdkExtentLine> lines = VmdkDescriptor.ParseExtents(desc, out string? invalidLine)
            ?? throw Invalid(ForeignFormatErrorIds.VmdkExtentInvalid, path, $"invalid extent line: {invalidLine}");
        string folder = Path.GetDirectoryName(path) ?? "/";
        var extents = new List<Extent>(lines.Count);
        foreach (VmdkExtentLine line in lines)
        {
            string extentPath;
            try
            {
                extentPath = Path.GetFullPath(line.FileName.StartsWith('/') ? line.FileName : Path.Join(folder, line.FileName));
            }
            catch (Exception e) when (e is ArgumentException or PathTooLongException or NotSupportedException)
            {
                throw Invalid(ForeignFormatErrorIds.VmdkExtentInvalid, path, $"extent file name '{line.FileName}' is not a valid path.");
            }

            ulong sectors = (ulong)line.Sectors;
            if (line.IsFlat || !IsInsideFolder(extentPath, folder))
            {
                // Flat extents hold only data; extents outside the descriptor's folder are reported, never opened.
                extents.Add(new Extent(extentPath, sectors, line.IsFlat, false, null));
                continue;
            }

            if (line.Type == "SESPARSE")
            {
                extents.Add(new Extent(extentPath, sectors, false, false, null));
                continue;
            }

            extents.Add(OpenSparseExtent(extentPath, path, sectors));
        }

        if (extents.Count == 0)
        {
            throw Invalid(ForeignFormatErrorIds.VmdkDescriptorInvalid, path, "the descriptor lists no usable extent.");
        }

        return new Layout(createType, extents);
    }

    private static Extent OpenSparseExtent(string extentPath, string descriptorPath, ulong sectors)
    {
        SafeFileHandle extentHandle;
        try
        {
            extentHandle = File.OpenHandle(extentPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KvmStorageException(ErrorKind.InvalidData, ForeignFormatErrorIds.VmdkExtentInvalid, $"'{descriptorPath}': cannot open extent '{extentPath}': {e.Message}", descriptorPath, e);
        }

        using (extentHandle)
        {
            ulong extentLength;
            try
            {
                extentLength = (ulong)RandomAccess.GetLength(extentHandle);
            }
            catch (IOException e)
            {
                throw new KvmStorageException(ErrorKind.InvalidData, ForeignFormatErrorIds.VmdkExtentInvalid, $"'{descriptorPath}': cannot read extent '{extentPath}': {e.Message}", descriptorPath, e);
            }

            if (extentLength < 4)
            {
                throw Invalid(ForeignFormatErrorIds.VmdkExtentInvalid, descriptorPath, $"extent '{extentPath}' is too small.");
            }

            uint magic = BinaryPrimitives.ReadUInt32BigEndian(ReadExactly(extentHandle, extentPath, extentLength, 0, 4, "VMDK extent magic"));
            if (magic is not (VmdkSparseHeader.Magic or VmdkSparseHeader.Vmdk3Magic))
            {
                throw Invalid(ForeignFormatErrorIds.VmdkExtentInvalid, descriptorPath, $"extent '{extentPath}' is not in VMDK sparse format.");
            }

            Extent extent = ReadSparseExtent(extentHandle, extentPath, extentLength, topLevel: false, out _)!;
            // The descriptor's sector count sizes the disk; the extent header only gives the grain.
            return extent with { Sectors = sectors };
        }
    }

    /// <summary>Reads a sparse extent's header (vmdk_open_vmdk4 / vmdk_open_vmfs_sparse checks).</summary>
    private static Extent? ReadSparseExtent(SafeFileHandle handle, string path, ulong length, bool topLevel, out Layout? embedded)
    {
        embedded = null;
        byte[] sector = ReadExactly(handle, path, length, 0, (int)Math.Min(512, length), "VMDK sparse header");
        if (sector.Length < VmdkSparseHeader.Size)
        {
            throw Invalid(ForeignFormatErrorIds.ImageTruncated, path, "the VMDK sparse header is cut short by the end of the file.");
        }

        if (BinaryPrimitives.ReadUInt32BigEndian(sector) == VmdkSparseHeader.Vmdk3Magic)
        {
            // VMDK3 ("COWD"): u32 version, flags, disk sectors, granularity, l1dir offset, l1dir size...
            uint diskSectors = BinaryPrimitives.ReadUInt32LittleEndian(sector.AsSpan(12));
            uint granularity = BinaryPrimitives.ReadUInt32LittleEndian(sector.AsSpan(16));
            if (granularity == 0 || granularity > 0x200000)
            {
                throw Invalid(ForeignFormatErrorIds.VmdkHeaderInvalid, path, "invalid granularity, image may be corrupt.");
            }

            return new Extent(path, diskSectors, false, false, granularity * 512);
        }

        VmdkSparseHeader header = VmdkSparseHeader.Parse(sector);
        if (header.Capacity == 0 && header.DescriptorOffset != 0)
        {
            if (!topLevel || header.DescriptorOffset > (ulong.MaxValue >> 9))
            {
                throw Invalid(ForeignFormatErrorIds.VmdkHeaderInvalid, path, "a sparse extent with capacity 0 must not redirect to another descriptor.");
            }

            byte[] text = ReadAtMost(handle, path, length, header.DescriptorOffset << 9, VmdkDescriptor.MaxDescriptorFile, "VMDK embedded descriptor");
            embedded = ParseDescriptorFile(VmdkDescriptor.AsCString(text), path);
            return null;
        }

        if (header.GdOffset == VmdkSparseHeader.GdAtEnd)
        {
            // streamOptimized written in one pass: the footer (marker, header, EOS marker) ends the file and wins over the header.
            ulong end = (length + 511) / 512 * 512;
            if (end < 1536)
            {
                throw Invalid(ForeignFormatErrorIds.VmdkFooterInvalid, path, "the file is too small to hold a VMDK footer.");
            }

            byte[] footer = ReadExactly(handle, path, length, end - 1536, (int)Math.Min(1536, length - (end - 1536)), "VMDK footer");
            Array.Resize(ref footer, 1536);
            ReadOnlySpan<byte> f = footer;
            if (BinaryPrimitives.ReadUInt32BigEndian(f[512..]) != VmdkSparseHeader.Magic
                || BinaryPrimitives.ReadUInt32LittleEndian(f[8..]) != 0
                || BinaryPrimitives.ReadUInt32LittleEndian(f[12..]) != MarkerFooter
                || BinaryPrimitives.ReadUInt64LittleEndian(f[1024..]) != 0
                || BinaryPrimitives.ReadUInt32LittleEndian(f[1032..]) != 0
                || BinaryPrimitives.ReadUInt32LittleEndian(f[1036..]) != MarkerEndOfStream)
            {
                throw Invalid(ForeignFormatErrorIds.VmdkFooterInvalid, path, "invalid footer.");
            }

            header = VmdkSparseHeader.Parse(f[512..]);
        }

        if (header.Version > 3)
        {
            throw Invalid(ForeignFormatErrorIds.VmdkUnsupportedVersion, path, $"unsupported VMDK version {header.Version}.");
        }

        if (header.GtesPerGt > 512)
        {
            throw Invalid(ForeignFormatErrorIds.VmdkHeaderInvalid, path, "L2 table size too big.");
        }

        // qemu keeps this product in 32 bits.
        uint l1EntrySectors = unchecked((uint)(header.GtesPerGt * header.GrainSize));
        if (l1EntrySectors == 0)
        {
            throw Invalid(ForeignFormatErrorIds.VmdkHeaderInvalid, path, "L1 entry size is invalid.");
        }

        if (header.Capacity > long.MaxValue / 512)
        {
            throw Invalid(ForeignFormatErrorIds.VmdkHeaderInvalid, path, $"capacity {header.Capacity} sectors is too large.");
        }

        ulong fileSectors = (length + 511) / 512;
        if (fileSectors < header.OverHead)
        {
            throw Invalid(ForeignFormatErrorIds.ImageTruncated, path, $"file truncated, expecting at least {header.OverHead * 512} bytes.");
        }

        if (header.GrainSize > 0x200000)
        {
            throw Invalid(ForeignFormatErrorIds.VmdkHeaderInvalid, path, "invalid granularity, image may be corrupt.");
        }

        ulong l1Size = (header.Capacity + l1EntrySectors - 1) / l1EntrySectors;
        if (l1Size > 32 * 1024 * 1024)
        {
            throw Invalid(ForeignFormatErrorIds.VmdkHeaderInvalid, path, "L1 size too big.");
        }

        bool compressed = header.CompressAlgorithm == VmdkSparseHeader.CompressDeflate;
        return new Extent(path, header.Capacity, false, compressed, (uint)(header.GrainSize * 512));
    }

    /// <summary>True when the real path of <paramref name="file"/> lies in the real folder <paramref name="folder"/> or below it.</summary>
    internal static bool IsInsideFolder(string file, string folder)
    {
        string? realFolder = PosixFile.RealPath(folder);
        if (realFolder is null)
        {
            return false;
        }

        // Symlinks are resolved, so a link in the folder cannot lead the reader elsewhere. A missing file is
        // checked by its name alone; opening it then fails, as it does in qemu.
        string candidate = PosixFile.RealPath(file) ?? file;
        string prefix = realFolder.EndsWith('/') ? realFolder : realFolder + "/";
        return candidate.StartsWith(prefix, StringComparison.Ordinal);
    }

    private sealed record Extent(string Path, ulong Sectors, bool Flat, bool Compressed, uint? GrainBytes);

    private sealed record Layout(string CreateType, List<Extent> Extents);
}
