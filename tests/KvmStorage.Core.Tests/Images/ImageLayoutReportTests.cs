using System.Buffers.Binary;
using System.Text.Json;
using KvmStorage.Core.Images;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// What Get-VHD users look for, read from images qemu made: the disk type of every format and variant, the sector
/// sizes the formats record, the fragmentation qemu-img check counts (qcow2) or the block order implies (vdi), and
/// the minimum size of MBR and GPT disks.
/// </summary>
public sealed class ImageLayoutReportTests : IDisposable
{
    private const ulong MiB = 1024 * 1024;

    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [SkippableTheory]
    [InlineData("raw", "", DiskType.Fixed)]
    [InlineData("qcow2", "", DiskType.Dynamic)]
    [InlineData("qcow2", "backing_file=base.raw,backing_fmt=raw", DiskType.Differencing)]
    [InlineData("vmdk", "", DiskType.Dynamic)]
    [InlineData("vmdk", "subformat=monolithicFlat", DiskType.Fixed)]
    [InlineData("vdi", "", DiskType.Dynamic)]
    [InlineData("vdi", "static=on", DiskType.Fixed)]
    [InlineData("vpc", "", DiskType.Dynamic)]
    [InlineData("vpc", "subformat=fixed", DiskType.Fixed)]
    [InlineData("vhdx", "", DiskType.Dynamic)]
    [InlineData("vhdx", "subformat=fixed", DiskType.Fixed)]
    public void Disk_type_and_sector_sizes_follow_the_header(string format, string options, DiskType expected)
    {
        ExternalTool.Require("qemu-img");
        File.WriteAllBytes(temp.Combine("base.raw"), new byte[MiB]);
        string path = temp.Combine("disk." + format);
        string[] o = options.Length == 0 ? [] : ["-o", options];
        ExternalTool.RunChecked("qemu-img", ["create", "-q", "-f", format, .. o, path, "4M"]);
        ImageInfo info = ImageInspector.Inspect(path, new ImageInspectOptions { Format = ImageFormats.TryParse(format, out ImageFormat f) ? f : null });
        Assert.Equal(expected, info.DiskType);
        (uint? logical, uint? physical) = format switch
        {
            "vhdx" => ((uint?)512, (uint?)512),
            "vpc" => ((uint?)512, (uint?)512),
            "vdi" => ((uint?)512, (uint?)null),
            _ => ((uint?)null, (uint?)null),
        };
        Assert.Equal(logical, info.LogicalSectorSize);
        Assert.Equal(physical, info.PhysicalSectorSize);
        ImageLayoutReport report = ImageLayoutReport.Read(info);
        Assert.Null(report.MinimumSize);
        Assert.Equal(0.0, report.FragmentationPercentage);
    }

    [SkippableFact]
    public void Qcow2_fragmentation_is_what_qemu_img_check_counts()
    {
        ExternalTool.Require("qemu-img");
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("frag.qcow2");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "qcow2", path, "32M");

        // Written back to front, interleaved, with compressed and preallocated zero clusters among them.
        ExternalTool.RunChecked("qemu-io", "-f", "qcow2", "-c", "write -P 1 8M 1M", "-c", "write -P 2 1M 256k", "-c", "write -P 3 0 128k",
            "-c", "write -c -P 4 4M 128k", "-c", "write -P 5 2M 64k", "-c", "write -P 6 1088k 64k", "-c", "write -z 8M 64k", "-c", "write -P 7 20M 4k", path);
        using JsonDocument check = JsonDocument.Parse(ExternalTool.RunChecked("qemu-img", "check", "--output=json", path));
        double allocated = check.RootElement.GetProperty("allocated-clusters").GetDouble();
        double fragmented = check.RootElement.GetProperty("fragmented-clusters").GetDouble();
        Assert.True(fragmented > 0);
        ImageInfo info = ImageInspector.Inspect(path);
        Assert.Equal(Math.Round(100 * fragmented / allocated, 2), ImageLayoutReport.Read(info).FragmentationPercentage);
    }

    [SkippableFact]
    public void Vdi_fragmentation_counts_blocks_out_of_guest_order()
    {
        ExternalTool.Require("qemu-img");
        ExternalTool.Require("qemu-io");
        string path = temp.Combine("frag.vdi");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "vdi", path, "16M");

        // Blocks 3, 2, 1, 0 allocated in that order: each of 1, 2, 3 follows nothing before it in the file.
        ExternalTool.RunChecked("qemu-io", "-f", "vdi", "-c", "write -P 1 3M 4k", "-c", "write -P 1 2M 4k", "-c", "write -P 1 1M 4k", "-c", "write -P 1 0 4k", path);
        Assert.Equal(75.0, ImageLayoutReport.Read(ImageInspector.Inspect(path)).FragmentationPercentage);
    }

    [SkippableTheory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    [InlineData("vhdx")]
    public void Minimum_size_is_where_the_last_partition_ends(string format)
    {
        ExternalTool.Require("qemu-img");
        string mbr = temp.Combine("mbr.raw");
        using (FileStream s = File.Create(mbr))
        {
            s.SetLength((long)(64 * MiB));
            byte[] sector = new byte[512];
            Partition(sector, 0, 0x83, 2048, 20480);
            Partition(sector, 1, 0x05, 22528, 40960);
            sector[510] = 0x55;
            sector[511] = 0xAA;
            s.Write(sector);
        }

        string gpt = temp.Combine("gpt.raw");
        using (FileStream s = File.Create(gpt))
        {
            s.SetLength((long)(64 * MiB));
            byte[] head = new byte[34 * 512];
            Partition(head, 0, 0xEE, 1, (uint)((64 * MiB / 512) - 1));
            head[510] = 0x55;
            head[511] = 0xAA;
            "EFI PART"u8.CopyTo(head.AsSpan(512));
            BinaryPrimitives.WriteUInt64LittleEndian(head.AsSpan(512 + 72), 2);
            BinaryPrimitives.WriteUInt32LittleEndian(head.AsSpan(512 + 80), 128);
            BinaryPrimitives.WriteUInt32LittleEndian(head.AsSpan(512 + 84), 128);
            foreach ((int index, ulong first, ulong last) in new[] { (0, 2048UL, 4095UL), (5, 4096UL, 60000UL) })
            {
                Span<byte> entry = head.AsSpan(1024 + (index * 128), 128);
                Guid.NewGuid().TryWriteBytes(entry);
                BinaryPrimitives.WriteUInt64LittleEndian(entry[32..], first);
                BinaryPrimitives.WriteUInt64LittleEndian(entry[40..], last);
            }

            s.Write(head);
        }

        foreach ((string raw, ulong expected) in new[] { (mbr, (22528UL + 40960) * 512), (gpt, (60000UL + 1 + 33) * 512) })
        {
            string image = raw;
            if (format != "raw")
            {
                image = Path.ChangeExtension(raw, format);
                ExternalTool.RunChecked("qemu-img", "convert", "-f", "raw", "-O", format, raw, image);
            }

            ImageInfo info = ImageInspector.Inspect(image);
            Assert.Equal(expected, ImageLayoutReport.Read(info).MinimumSize);
        }
    }

    private static void Partition(Span<byte> mbr, int index, byte type, uint first, uint count)
    {
        Span<byte> entry = mbr.Slice(446 + (index * 16), 16);
        entry[4] = type;
        BinaryPrimitives.WriteUInt32LittleEndian(entry[8..], first);
        BinaryPrimitives.WriteUInt32LittleEndian(entry[12..], count);
    }
}
