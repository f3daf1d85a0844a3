using KvmStorage.Core.Access;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Infrastructure;

/// <summary>
/// A volume given as the object <c>Get-Volume</c> emits, a VM disk (<c>Get-VMDisk</c>: its image), a file from
/// <c>Get-ChildItem</c>, or a path string. PowerShell converts each to this type through its constructors; the core's
/// one resolver (<see cref="VolumeLocator"/>) turns it into the file, with the same rules on every cmdlet.
/// </summary>
public sealed class VolumeReference
{
    private readonly Func<Func<string, string>, VolumeSpec> spec;

    public VolumeReference(StorageVolume volume)
    {
        ArgumentNullException.ThrowIfNull(volume);
        Volume = volume;
        Path = volume.Path;
        spec = _ => VolumeSpec.Of(volume);
    }

    public VolumeReference(VMDisk disk)
    {
        ArgumentNullException.ThrowIfNull(disk);
        Path = disk.Source ?? string.Empty;
        spec = _ => disk switch
        {
            { Pool: { } pool, VolumeName: { } name } => new VolumeSpec.InPool(pool, name),
            { Source: { Length: > 0 } source } => new VolumeSpec.AtHostPath(source),
            _ => throw new Core.Errors.KvmStorageException(
                Core.Errors.ErrorKind.InvalidArgument,
                AccessErrorIds.VolumeNotNamed,
                $"Disk {disk.Target} of VM '{disk.VMName}' has no image (an empty drive); it names no volume.",
                disk.ToString()),
        };
    }

    public VolumeReference(FileInfo file)
    {
        ArgumentNullException.ThrowIfNull(file);
        Path = file.FullName;
        spec = _ => new VolumeSpec.AtLocalPath(file.FullName);
    }

    public VolumeReference(string path)
    {
        Path = path;
        spec = resolve => new VolumeSpec.AtPath(path, resolve(path));
    }

    /// <summary>The path as given (a host path for objects, the typed text for strings).</summary>
    public string Path { get; }

    /// <summary>The volume object, when one was given.</summary>
    public StorageVolume? Volume { get; }

    /// <summary>What the core resolves; <paramref name="resolveProviderPath"/> turns typed text into a local path (current location, ~).</summary>
    public VolumeSpec ToSpec(Func<string, string> resolveProviderPath) => spec(resolveProviderPath);

    public override string ToString() => Path;
}
