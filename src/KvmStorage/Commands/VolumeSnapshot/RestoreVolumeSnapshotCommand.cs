using System.Globalization;
using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeSnapshot;

/// <summary>Restore-VolumeSnapshot: reverts a qcow2 volume to one of its internal snapshots, like <c>qemu-img snapshot -a</c>.</summary>
[Cmdlet(VerbsData.Restore, "VolumeSnapshot", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = ByName)]
[OutputType(typeof(StorageVolume))]
public sealed class RestoreVolumeSnapshotCommand : KvmCmdlet
{
    private const string ByName = "ByName";
    private const string ById = "ById";
    private const string ByObject = "ByObject";

    /// <summary>The qcow2 volume, as a Get-Volume object or an image path.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByName, ValueFromPipeline = true)]
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ById, ValueFromPipeline = true)]
    public VolumeReference Volume { get; set; } = null!;

    /// <summary>The name of the snapshot to revert to.</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = ByName)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SnapshotNameCompleter))]
    public string Name { get; set; } = string.Empty;

    /// <summary>The id of the snapshot to revert to.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ById)]
    [ValidateNotNullOrEmpty]
    public string Id { get; set; } = string.Empty;

    /// <summary>A snapshot as Get-VolumeSnapshot emits it.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByObject, ValueFromPipeline = true)]
    public Core.Volumes.VolumeSnapshot InputObject { get; set; } = null!;

    /// <summary>Emit the reverted volume.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    /// <summary>The passphrase of an encrypted volume: proven to open it before it is reverted.</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    protected override void ProcessRecord()
    {
        object target = ParameterSetName == ByObject ? InputObject : Volume;
        RunForItem(target, () =>
        {
            VolumeSpec spec = ParameterSetName == ByObject ? VolumeSpec.Of(InputObject) : SpecOf(Volume);
            using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
            VolumeAction<SnapshotInfo> revert = ParameterSetName switch
            {
                ByObject => Volumes.RevertSnapshot(spec, InputObject.Id, InputObject.Name, passphrase),
                ById => Volumes.RevertSnapshot(spec, Id, null, passphrase),
                _ => Volumes.RevertSnapshot(spec, null, Name, passphrase),
            };
            if (ShouldProcess(revert.Target, revert.Description))
            {
                revert.Run(null, CancellationToken);
                if (PassThru)
                {
                    WriteObject(Volumes.Locator.Get(spec));
                }
            }
        });
    }
}
