using KvmStorage.Core.Images.Block;
using Xunit;
using static KvmStorage.Core.Tests.Images.Block.BlockTestImages;

namespace KvmStorage.Core.Tests.Images.Block;

/// <summary>Every format qemu makes from one raw source reads back through the block readers exactly as qemu reads it.</summary>
public sealed class BlockReaderOracleTests : IClassFixture<BlockTestImages>
{
    private readonly BlockTestImages images;

    public BlockReaderOracleTests(BlockTestImages images)
    {
        this.images = images;
    }

    public static TheoryData<string, string[]> Conversions => new()
    {
        { "qcow2", ["-o", "compat=1.1"] },
        { "qcow2", ["-o", "compat=0.10"] },
        { "qcow2", ["-c"] },
        { "qcow2", ["-c", "-o", "compression_type=zstd"] },
        { "qcow2", ["-o", "extended_l2=on"] },
        { "qcow2", ["-o", "cluster_size=512"] },
        { "qcow2", ["-o", "cluster_size=2M"] },
        { "vmdk", ["-o", "subformat=monolithicSparse"] },
        { "vmdk", ["-o", "subformat=streamOptimized"] },
        { "vmdk", ["-o", "subformat=monolithicFlat"] },
        { "vdi", ["-o", "static=on"] },
        { "vdi", [] },
        { "vpc", [] },
        { "vpc", ["-o", "subformat=fixed"] },
        { "vhdx", [] },
        { "vhdx", ["-o", "subformat=fixed"] },
    };

    [SkippableFact]
    public void Raw_source_reads_like_qemu()
    {
        AssertMatchesQemu(images.Source);
    }

    [SkippableTheory]
    [MemberData(nameof(Conversions))]
    public void Converted_image_reads_like_qemu(string format, string[] options)
    {
        string image = images.PathOf($"{format}-{string.Join('-', options).Replace('=', '_').Replace(",", "_", StringComparison.Ordinal)}.img");
        Qemu("qemu-img", ["convert", "-f", "raw", "-O", format, .. options, images.Source, image]);
        try
        {
            AssertMatchesQemu(image, format);
        }
        finally
        {
            foreach (string file in Directory.GetFiles(Path.GetDirectoryName(image)!, Path.GetFileName(image) + "*"))
            {
                File.Delete(file);
            }

            // monolithicFlat keeps its data next to the descriptor.
            string flat = Path.ChangeExtension(image, null) + "-flat.img";
            File.Delete(flat);
        }
    }

    [SkippableFact]
    public void Extended_l2_subclusters_over_a_raw_backing_file_read_like_qemu()
    {
        string image = images.PathOf("ext-l2-over-raw.qcow2");
        Qemu("qemu-img", "create", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", "-b", images.Source, "-F", "raw", image);
        Qemu("qemu-io", "-f", "qcow2",
            "-c", "write -P 0x5a 5120 7168",
            "-c", "write -z 204800 8192",
            "-c", "write -P 0x11 1048576 2048",
            "-c", "write -P 0x22 1050624 2048",
            "-c", "write -z 3145728 131072",
            "-c", "write -P 0x33 9000448 300032",
            "-c", "discard 9043968 2048",
            image);
        AssertMatchesQemu(image);
    }

    [SkippableFact]
    public void Chain_over_a_shorter_raw_base_reads_like_qemu()
    {
        // base.raw: the first 40 MiB of the source; mid and top are 64 MiB, so the tail reads as zeros below them.
        string baseRaw = images.PathOf("chain-base.raw");
        Qemu("qemu-img", "convert", "-O", "raw", "--image-opts", $"driver=raw,file.filename={images.Source},size={40 * 1024 * 1024}", baseRaw);
        string mid = images.PathOf("chain-mid.qcow2");
        Qemu("qemu-img", "create", "-f", "qcow2", "-b", baseRaw, "-F", "raw", mid, "64M");
        Qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0x44 1000448 65536", "-c", "write -z 2097152 1048576", "-c", "write -P 0x45 41943040 1048576", mid);
        AssertMatchesQemu(mid);

        string top = images.PathOf("chain-top.qcow2");
        Qemu("qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10", "-b", mid, "-F", "qcow2", top);
        Qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0x66 1048576 4096", "-c", "write -P 0x67 50331648 65536", top);
        AssertMatchesQemu(top);

        string third = images.PathOf("chain-third.qcow2");
        Qemu("qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4k", "-b", top, "-F", "qcow2", third);
        Qemu("qemu-io", "-f", "qcow2", "-c", "write -z 0 1048576", "-c", "write -P 0x77 45000192 8192", "-c", "write -z 41943040 65536", third);
        AssertMatchesQemu(third);

        using IBlockReader reader = BlockReaders.Open(third);
        Assert.Equal(3, reader.Info.BackingChain.Count);

        // Past the raw base's end and never written above: zeros, not unallocated.
        Extent tail = reader.GetExtents(60UL * 1024 * 1024, 4096).Single();
        Assert.Equal(ExtentKind.Zero, tail.Kind);
    }

    [SkippableFact]
    public void Chain_over_qcow2_bases_with_zero_clusters_reads_like_qemu()
    {
        string baseImage = images.PathOf("q-base.qcow2");
        Qemu("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", images.Source, baseImage);
        string top = images.PathOf("q-top.qcow2");
        Qemu("qemu-img", "create", "-f", "qcow2", "-b", baseImage, "-F", "qcow2", top);
        Qemu("qemu-io", "-f", "qcow2", "-c", "write -z 65536 655360", "-c", "write -P 0x99 33554432 1048576", "-c", "write -z 67043328 65536", top);
        AssertMatchesQemu(top);

        using IBlockReader reader = BlockReaders.Open(top);
        Assert.Contains(reader.GetExtents(65536, 655360), e => e.Kind == ExtentKind.Zero);
    }

    [SkippableFact]
    public void Unallocated_ranges_without_backing_are_reported_unallocated()
    {
        string image = images.PathOf("sparse.qcow2");
        Qemu("qemu-img", "create", "-f", "qcow2", image, "8M");
        Qemu("qemu-io", "-f", "qcow2", "-c", "write -P 1 1048576 65536", image);
        using IBlockReader reader = BlockReaders.Open(image);
        Extent[] extents = [.. reader.GetExtents(0, reader.Size)];
        Assert.Equal(
            [new Extent(0, 1048576, ExtentKind.Unallocated), new Extent(1048576, 65536, ExtentKind.Data), new Extent(1114112, 8388608 - 1114112, ExtentKind.Unallocated)],
            extents);
    }
}
