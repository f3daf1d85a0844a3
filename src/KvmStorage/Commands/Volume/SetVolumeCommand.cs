using System.Management.Automation;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Chains;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>
/// Set-Volume: changes a qcow2 volume's backing file (<c>qemu-img rebase</c>): onto another image with the guest
/// view kept, onto a moved copy of the same image with -Unsafe, or to none ($null) to make it standalone.
/// </summary>
[Cmdlet(VerbsCommon.Set, "Volume", SupportsShouldProcess = true)]
[OutputType(typeof(StorageVolume))]
public sealed class SetVolumeCommand : KvmCmdlet
{
    /// <summary>The qcow2 volume to rebase, as a Get-Volume object or an image path.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    public VolumeReference Volume { get; set; } = null!;

    /// <summary>The new backing image: a volume object or a path; $null (or '') makes the volume standalone.</summary>
    [Parameter(Mandatory = true)]
    [AllowNull]
    [Alias("BackingVolume")]
    public VolumeReference? BackingPath { get; set; }

    /// <summary>Format of the new backing image; detected from its content when omitted, and recorded in the header.</summary>
    [Parameter]
    [ValidateSet("qcow2", "raw", "vmdk", "qcow", "vdi", "vpc", "vhdx")]
    public string? BackingFormat { get; set; }

    /// <summary>Record the backing path relative to the volume's folder instead of absolute.</summary>
    [Parameter]
    public SwitchParameter RelativeBackingPath { get; set; }

    /// <summary>Only rewrite the header, copying no data: for a backing file that was moved or renamed unchanged.</summary>
    [Parameter]
    public SwitchParameter Unsafe { get; set; }

    /// <summary>Emit the rebased volume.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        RunForItem(Volume, () =>
        {
            StorageVolume volume = VolumeTargets.ResolveVolume(this, KvmHost, Volume);
            StorageVolume? backing = null;
            if (BackingPath is not null && BackingPath.Path.Length > 0)
            {
                backing = VolumeTargets.ResolveVolume(this, KvmHost, BackingPath);
            }

            string? recorded = backing?.Path;
            if (backing is not null && RelativeBackingPath)
            {
                recorded = Path.GetRelativePath(Path.GetDirectoryName(volume.Path)!, backing.Path);
            }

            var options = new RebaseOptions
            {
                BackingFile = recorded,
                BackingFormat = BackingFormat is not null && ImageFormats.TryParse(BackingFormat, out ImageFormat format) ? format : null,
                Unsafe = Unsafe,
                AllowRawBacking = backing?.Pool is not null,
                HostPathResolver = KvmHost.Paths.IsSystemRoot ? null : KvmHost.Paths.Resolve,
            };
            string what = (recorded, Unsafe.IsPresent) switch
            {
                (null, false) => $"Make standalone (copy the data it reads from '{volume.BackingPath}' into it)",
                (null, true) => "Drop the backing file without copying its data (the guest loses what it read from it)",
                (_, false) => $"Rebase onto '{recorded}' (copy what differs from '{volume.BackingPath}' first, so the guest sees the same data)",
                (_, true) => $"Record '{recorded}' as backing file without comparing contents",
            };
            if (ShouldProcess(volume.Path, what))
            {
                KvmHost.EnsureWritable($"Rebasing '{volume.Name}'", volume.Path);
                RunWithProgress("Set-Volume", $"Rebasing {volume.Name}", (progress, token) => ImageRebaser.Rebase(volume.LocalPath, options, progress, token));
                if (volume.Pool is { } pool)
                {
                    // A libvirt daemon caches each volume's backing store until its pool is refreshed.
                    try
                    {
                        KvmHost.RefreshPool(pool);
                    }
                    catch (KvmStorageException e)
                    {
                        WriteWarning($"'{volume.Path}' was rebased, but refreshing pool '{pool}' failed, so libvirt may still show the old backing file until Update-StoragePool: {e.Message}");
                    }
                }

                if (PassThru)
                {
                    WriteObject(VolumeTargets.ResolveVolume(this, KvmHost, new VolumeReference(volume)));
                }
            }
        });
    }
}
