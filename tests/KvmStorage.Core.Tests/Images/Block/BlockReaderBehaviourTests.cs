using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Tests.Support;
using Xunit;
using static KvmStorage.Core.Tests.Images.Block.BlockTestImages;

namespace KvmStorage.Core.Tests.Images.Block;

/// <summary>Refusals with typed errors, range checks, and reads from several threads at once.</summary>
public sealed class BlockReaderBehaviourTests : IDisposable
{
    private readonly TempDirectory dir = new();

    public void Dispose() => dir.Dispose();

    [SkippableTheory]
    [InlineData("-c")]
    [InlineData("-o", "cluster_size=4k")]
    public void Parallel_reads_of_random_ranges_equal_a_sequential_read(params string[] options)
    {
        string source = dir.Combine("mt.raw");
        var random = new Random(99);
        byte[] data = new byte[12 * 1024 * 1024];
        random.NextBytes(data);
        data.AsSpan(3_000_000, 2_000_000).Fill(7);
        File.WriteAllBytes(source, data);
        string image = dir.Combine("mt.qcow2");
        Qemu("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", .. options, source, image]);

        using IBlockReader reader = BlockReaders.Open(image);
        byte[] sequential = new byte[reader.Size];
        reader.Read(0, sequential);
        Assert.Equal(data, sequential);

        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, worker =>
        {
            var r = new Random(worker);
            byte[] buffer = new byte[300_000];
            for (int i = 0; i < 200; i++)
            {
                int length = r.Next(1, buffer.Length);
                ulong offset = (ulong)r.NextInt64(0, (long)reader.Size - length);
                reader.Read(offset, buffer.AsSpan(0, length));
                Assert.True(buffer.AsSpan(0, length).SequenceEqual(sequential.AsSpan((int)offset, length)), $"worker {worker} read {length} bytes at {offset} wrongly");
            }
        });
    }

    [SkippableFact]
    public void Encrypted_qcow2_is_refused_as_ImageEncrypted()
    {
        // qemu no longer creates AES images and LUKS creation is slow: mark a plain image as AES-encrypted (crypt_method = 1).
        string image = dir.Combine("enc.qcow2");
        Qemu("qemu-img", "create", "-f", "qcow2", image, "4M");
        using (FileStream stream = new(image, FileMode.Open, FileAccess.Write))
        {
            stream.Position = 32;
            stream.Write([0, 0, 0, 1]);
        }

        var e = Assert.Throws<KvmStorageException>(() => BlockReaders.Open(image));
        Assert.Equal(BlockErrorIds.ImageEncrypted, e.ErrorId);
        Assert.Equal(ErrorKind.NotSupported, e.Kind);
    }

    [SkippableFact]
    public void Qcow2_with_an_external_data_file_is_refused()
    {
        string image = dir.Combine("ext.qcow2");
        Qemu("qemu-img", "create", "-f", "qcow2", "-o", $"data_file={dir.Combine("ext.data")}", image, "4M");
        var e = Assert.Throws<KvmStorageException>(() => BlockReaders.Open(image));
        Assert.Equal(BlockErrorIds.ExternalDataFileNotSupported, e.ErrorId);
    }

    [Fact]
    public void Reads_and_extents_beyond_the_end_are_refused()
    {
        string image = dir.Combine("small.raw");
        File.WriteAllBytes(image, new byte[4096]);
        using IBlockReader reader = BlockReaders.Open(image);
        Assert.Equal(4096UL, reader.Size);
        byte[] buffer = new byte[512];
        Assert.Equal(BlockErrorIds.RangeOutOfBounds, Assert.Throws<KvmStorageException>(() => reader.Read(3700, buffer)).ErrorId);
        Assert.Equal(BlockErrorIds.RangeOutOfBounds, Assert.Throws<KvmStorageException>(() => reader.GetExtents(0, 4097)).ErrorId);
        reader.Read(3584, buffer);
    }

    [Fact]
    public void Raw_reads_past_the_file_end_within_the_size_are_zeros()
    {
        // qemu counts whole sectors: a 1000-byte file is a 1024-byte disk whose tail reads as zeros.
        string image = dir.Combine("odd.raw");
        File.WriteAllBytes(image, Enumerable.Repeat((byte)0xAB, 1000).ToArray());
        using IBlockReader reader = BlockReaders.Open(image);
        Assert.Equal(1024UL, reader.Size);
        byte[] buffer = new byte[1024];
        reader.Read(0, buffer);
        Assert.All(buffer[..1000], b => Assert.Equal(0xAB, b));
        Assert.All(buffer[1000..], b => Assert.Equal(0, b));
        Assert.Equal(ExtentKind.Zero, reader.GetExtents(0, 1024).Last().Kind);
    }

    [SkippableFact]
    public void Vmdk_extent_outside_the_descriptor_folder_is_refused()
    {
        string inner = Directory.CreateDirectory(dir.Combine("pool")).FullName;
        File.WriteAllBytes(dir.Combine("secret.raw"), new byte[1024 * 1024]);
        string descriptor = Path.Combine(inner, "escape.vmdk");
        File.WriteAllText(descriptor, """
            # Disk DescriptorFile
            version=1
            CID=12345678
            parentCID=ffffffff
            createType="monolithicFlat"

            RW 2048 FLAT "../secret.raw" 0

            ddb.virtualHWVersion = "4"
            """);
        var e = Assert.Throws<KvmStorageException>(() => BlockReaders.Open(descriptor, new BlockOpenOptions { ForceShare = true }));
        Assert.Equal(BlockErrorIds.ExtentOutsideFolder, e.ErrorId);
    }

    [SkippableFact]
    public void Image_held_by_a_writer_is_refused_unless_shared()
    {
        string image = dir.Combine("locked.qcow2");
        Qemu("qemu-img", "create", "-f", "qcow2", image, "1M");
        using (KvmStorage.Core.Images.ImageLock.AcquireForWrite(image))
        {
            var e = Assert.Throws<KvmStorageException>(() => BlockReaders.Open(image));
            Assert.Equal(KvmStorage.Core.Images.ImageErrorIds.ImageInUse, e.ErrorId);
            using IBlockReader shared = BlockReaders.Open(image, new BlockOpenOptions { ForceShare = true });
            Assert.Equal(1024UL * 1024, shared.Size);
        }
    }
}
