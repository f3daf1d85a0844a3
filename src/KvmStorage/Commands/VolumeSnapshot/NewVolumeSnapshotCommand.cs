using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeSnapshot;

/// <summary>New-VolumeSnapshot: takes an internal (disk-only) snapshot of a qcow2 volume, like <c>qemu-img snapshot -c</c>.</summary>
[Cmdlet(VerbsCommon.New, "VolumeSnapshot", SupportsShouldProcess = true)]
[OutputType(typeof(Core.Volumes.VolumeSnapshot))]
public sealed class NewVolumeSnapshotCommand : KvmCmdlet
{
    /// <summary>The qcow2 volume, as a Get-Volume object or an image path.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    public VolumeReference Volume { get; set; } = null!;

    /// <summary>The snapshot's name, unique within the volume.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ValidateNotNullOrEmpty]
    public string Name { get; set; } = string.Empty;

    /// <summary>The passphrase of an encrypted volume: proven to open it before the snapshot is taken (the snapshot itself needs none).</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    protected override void ProcessRecord()
    {
        RunForItem(Volume, () =>
        {
            VolumeSpec spec = SpecOf(Volume);
            using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
            VolumeAction<SnapshotInfo> create = Volumes.CreateSnapshot(spec, Name, passphrase);
            if (ShouldProcess(create.Target, create.Description))
            {
                SnapshotInfo created = create.Run(null, CancellationToken);
                WriteObject(Core.Volumes.VolumeSnapshot.From(Volumes.Locator.Get(spec), created));
            }
        });
    }
}
